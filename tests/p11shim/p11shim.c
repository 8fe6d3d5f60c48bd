/* libkms_p11shim.so: a PKCS#11 module that forwards every call to another
 * module (SoftHSM2) and injects faults on a schedule. kmsd loads it as its
 * pkcs11.module; tests and the soak bench drive it through its config file.
 *
 * Environment:
 *   KMS_P11SHIM_MODULE  the real module (default: the SoftHSM2 path found at
 *                       build time)
 *   KMS_P11SHIM_CONFIG  the schedule file; re-read within ~20 ms whenever it
 *                       changes (write a new file and rename it over the old)
 *   KMS_P11SHIM_RULES   rules inline, separated by ';' (read once, used
 *                       only when there is no config file)
 *   KMS_P11SHIM_STATS   where the counters go (or a `stats` line)
 *   KMS_P11SHIM_SEED    seed of the rate rules (default: fixed)
 *
 * The schedule, one rule per line ('#' starts a comment):
 *   stats PATH
 *   fault  FUNC RV [SELECTORS]   FUNC returns RV without calling the module
 *   delay  FUNC MS [SELECTORS]   FUNC sleeps MS milliseconds, then forwards
 *   sticky FUNC [SELECTORS]      FUNC returns CKR_DEVICE_ERROR; from then on
 *                                every call returns CKR_SESSION_HANDLE_INVALID
 *                                until C_Finalize (the failure boulder met)
 * FUNC is a function name (C_Encrypt) or '*'; RV a name (CKR_DEVICE_ERROR)
 * or a number. SELECTORS: nth=N (the Nth matching call only), every=N
 * (every Nth), rate=P (each call with probability P), after=MS and for=MS
 * (a window, in milliseconds from the time the schedule was loaded; calls
 * outside it are neither faulted nor counted). Without nth/every/rate a
 * rule fires on every matching call in its window. The first rule that
 * fires wins; delays add up and do not stop later rules.
 *
 * Counters (written to the stats file at C_Finalize and every 100 ms while
 * initialized, as "name value" lines): opens, closes (C_CloseSession, and
 * each session C_CloseAllSessions ended), live (open now), dropped (live
 * sessions that C_Finalize ended), initialize, finalize, injected,
 * delayed, sticky (1 while stuck), calls. In sticky mode C_CloseSession
 * and C_CloseAllSessions still reach the module (the device forgot the
 * sessions; the module must too), but report CKR_SESSION_HANDLE_INVALID.
 */
#include <errno.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pkcs11/p11_pkcs11.h"
#include "p11shim_functions.h"

#ifndef KMS_P11SHIM_DEFAULT_MODULE
#define KMS_P11SHIM_DEFAULT_MODULE "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"
#endif

#define EXPORT __attribute__((visibility("default")))
#define MAX_RULES 32
#define MAX_SESSIONS 4096
#define POLL_MS 20
#define STATS_EVERY_MS 100

enum {
#define X(name, params, args) FN_##name,
    P11SHIM_FUNCTIONS(X)
#undef X
        FN_COUNT
};

static const char *const fn_names[FN_COUNT] = {
#define X(name, params, args) #name,
    P11SHIM_FUNCTIONS(X)
#undef X
};

enum rule_kind { RULE_FAULT, RULE_DELAY, RULE_STICKY };

struct rule {
    enum rule_kind kind;
    int fn; /* -1: any function */
    CK_RV rv;
    unsigned long delay_ms;
    unsigned long nth, every;
    double rate;
    uint64_t after_ms, for_ms; /* for_ms 0: no end */
    atomic_ulong calls;        /* matching calls inside the window */
};

static struct {
    pthread_mutex_t load_mu; /* serializes loading the module */
    void *module;
    CK_FUNCTION_LIST_PTR real;

    pthread_rwlock_t rules_lock;
    struct rule rules[MAX_RULES];
    size_t nrules;
    uint64_t t0_ms;
    char config[1024];
    char stats[1024];
    struct timespec config_mtime;
    ino_t config_ino;
    off_t config_size;
    int config_seen;

    pthread_mutex_t sess_mu;
    CK_SESSION_HANDLE sess[MAX_SESSIONS];
    CK_SLOT_ID sess_slot[MAX_SESSIONS];
    size_t nsess;

    atomic_ulong opens, closes, dropped, initialize, finalize, injected, delayed, calls;
    atomic_int sticky;

    pthread_mutex_t thr_mu; /* the poller */
    pthread_t thr;
    int thr_running;
    atomic_int thr_stop;
} S = {
    .load_mu = PTHREAD_MUTEX_INITIALIZER,
    .rules_lock = PTHREAD_RWLOCK_INITIALIZER,
    .sess_mu = PTHREAD_MUTEX_INITIALIZER,
    .thr_mu = PTHREAD_MUTEX_INITIALIZER,
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned long ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- the schedule ---------------------------------------------------------------- */

static const struct {
    const char *name;
    CK_RV rv;
} rv_names[] = {
    {"CKR_OK", CKR_OK},
    {"CKR_SESSION_HANDLE_INVALID", CKR_SESSION_HANDLE_INVALID},
    {"CKR_DEVICE_REMOVED", CKR_DEVICE_REMOVED},
    {"CKR_TOKEN_NOT_PRESENT", CKR_TOKEN_NOT_PRESENT},
    {"CKR_DEVICE_ERROR", CKR_DEVICE_ERROR},
    {"CKR_FUNCTION_FAILED", CKR_FUNCTION_FAILED},
    {"CKR_GENERAL_ERROR", CKR_GENERAL_ERROR},
    {"CKR_DEVICE_MEMORY", CKR_DEVICE_MEMORY},
    {"CKR_HOST_MEMORY", CKR_HOST_MEMORY},
    {"CKR_SESSION_CLOSED", CKR_SESSION_CLOSED},
    {"CKR_USER_NOT_LOGGED_IN", CKR_USER_NOT_LOGGED_IN},
};

static int parse_rv(const char *s, CK_RV *out)
{
    for (size_t i = 0; i < sizeof(rv_names) / sizeof(rv_names[0]); i++)
        if (strcmp(s, rv_names[i].name) == 0) {
            *out = rv_names[i].rv;
            return 0;
        }
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 0);
    if (errno != 0 || end == s || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

static int parse_fn(const char *s, int *out)
{
    if (strcmp(s, "*") == 0) {
        *out = -1;
        return 0;
    }
    for (int i = 0; i < FN_COUNT; i++)
        if (strcmp(s, fn_names[i]) == 0) {
            *out = i;
            return 0;
        }
    return -1;
}

static int parse_ulong(const char *s, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

/* Splits line (modified in place) into at most max words. */
static size_t words(char *line, char **w, size_t max)
{
    size_t n = 0;
    char *p = line;
    while (n < max) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0' || *p == '#' || *p == '\n' || *p == '\r')
            break;
        w[n++] = p;
        while (*p != '\0' && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            p++;
        if (*p == '\0')
            break;
        *p++ = '\0';
    }
    return n;
}

static void complain(const char *what, const char *line)
{
    fprintf(stderr, "p11shim: %s: %s\n", what, line);
}

/* Adds one rule line to rules[*n]; stats lines set stats. */
static void parse_line(char *line, struct rule *rules, size_t *n, char *stats, size_t stats_cap)
{
    char copy[512];
    snprintf(copy, sizeof(copy), "%s", line);
    char *w[12];
    size_t nw = words(line, w, 12);
    if (nw == 0)
        return;
    if (strcmp(w[0], "stats") == 0 && nw == 2) {
        snprintf(stats, stats_cap, "%s", w[1]);
        return;
    }
    if (*n >= MAX_RULES) {
        complain("too many rules, ignored", copy);
        return;
    }
    struct rule r;
    memset(&r, 0, sizeof(r));
    size_t i = 2;
    if (nw < 2 || parse_fn(w[1], &r.fn) != 0) {
        complain("bad function", copy);
        return;
    }
    if (strcmp(w[0], "fault") == 0) {
        r.kind = RULE_FAULT;
        if (nw < 3 || parse_rv(w[2], &r.rv) != 0) {
            complain("bad return value", copy);
            return;
        }
        i = 3;
    } else if (strcmp(w[0], "delay") == 0) {
        r.kind = RULE_DELAY;
        if (nw < 3 || parse_ulong(w[2], &r.delay_ms) != 0) {
            complain("bad delay", copy);
            return;
        }
        i = 3;
    } else if (strcmp(w[0], "sticky") == 0) {
        r.kind = RULE_STICKY;
        r.rv = CKR_DEVICE_ERROR;
    } else {
        complain("unknown rule", copy);
        return;
    }
    for (; i < nw; i++) {
        char *eq = strchr(w[i], '=');
        unsigned long v = 0;
        if (eq == NULL) {
            complain("bad selector", copy);
            return;
        }
        *eq++ = '\0';
        if (strcmp(w[i], "rate") == 0) {
            char *end;
            r.rate = strtod(eq, &end);
            if (end == eq || *end != '\0' || r.rate < 0 || r.rate > 1) {
                complain("bad rate", copy);
                return;
            }
            continue;
        }
        if (parse_ulong(eq, &v) != 0) {
            complain("bad number", copy);
            return;
        }
        if (strcmp(w[i], "nth") == 0)
            r.nth = v;
        else if (strcmp(w[i], "every") == 0)
            r.every = v;
        else if (strcmp(w[i], "after") == 0)
            r.after_ms = v;
        else if (strcmp(w[i], "for") == 0)
            r.for_ms = v;
        else {
            complain("unknown selector", copy);
            return;
        }
    }
    rules[*n] = r;
    (*n)++;
}

/* Parses text (lines separated by '\n' or sep) into the live schedule. */
static void install(char *text, char sep)
{
    struct rule rules[MAX_RULES];
    size_t n = 0;
    char stats[sizeof(S.stats)];
    snprintf(stats, sizeof(stats), "%s", S.stats);
    char *line = text;
    while (line != NULL && *line != '\0') {
        char *next = line;
        while (*next != '\0' && *next != '\n' && *next != sep)
            next++;
        char *after = *next != '\0' ? next + 1 : NULL;
        *next = '\0';
        parse_line(line, rules, &n, stats, sizeof(stats));
        line = after;
    }
    const char *env_stats = getenv("KMS_P11SHIM_STATS");
    pthread_rwlock_wrlock(&S.rules_lock);
    memcpy(S.rules, rules, n * sizeof(rules[0]));
    S.nrules = n;
    S.t0_ms = now_ms();
    snprintf(S.stats, sizeof(S.stats), "%s",
             env_stats != NULL && env_stats[0] != '\0' ? env_stats : stats);
    pthread_rwlock_unlock(&S.rules_lock);
}

/* Reloads the config file if it changed since the last look. */
static void poll_config(void)
{
    if (S.config[0] == '\0')
        return;
    struct stat st;
    if (stat(S.config, &st) != 0)
        return;
    if (S.config_seen && st.st_ino == S.config_ino && st.st_size == S.config_size &&
        st.st_mtim.tv_sec == S.config_mtime.tv_sec && st.st_mtim.tv_nsec == S.config_mtime.tv_nsec)
        return;
    FILE *f = fopen(S.config, "r");
    if (f == NULL)
        return;
    char text[16384];
    size_t len = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[len] = '\0';
    S.config_seen = 1;
    S.config_ino = st.st_ino;
    S.config_size = st.st_size;
    S.config_mtime = st.st_mtim;
    install(text, '\n');
}

static void write_stats(void)
{
    char path[sizeof(S.stats)], tmp[sizeof(S.stats) + 16];
    pthread_rwlock_rdlock(&S.rules_lock);
    snprintf(path, sizeof(path), "%s", S.stats);
    pthread_rwlock_unlock(&S.rules_lock);
    if (path[0] == '\0')
        return;
    pthread_mutex_lock(&S.sess_mu);
    size_t live = S.nsess;
    pthread_mutex_unlock(&S.sess_mu);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return;
    fprintf(f,
            "opens %lu\ncloses %lu\nlive %zu\ndropped %lu\ninitialize %lu\nfinalize %lu\n"
            "injected %lu\ndelayed %lu\nsticky %d\ncalls %lu\n",
            atomic_load(&S.opens), atomic_load(&S.closes), live, atomic_load(&S.dropped),
            atomic_load(&S.initialize), atomic_load(&S.finalize), atomic_load(&S.injected),
            atomic_load(&S.delayed), atomic_load(&S.sticky), atomic_load(&S.calls));
    if (fclose(f) == 0)
        rename(tmp, path);
}

/* The poller: reloads the schedule and writes the counters while the
 * module is initialized. */
static void *poller(void *arg)
{
    (void)arg;
    uint64_t last_stats = 0;
    while (!atomic_load(&S.thr_stop)) {
        poll_config();
        uint64_t t = now_ms();
        if (t - last_stats >= STATS_EVERY_MS) {
            write_stats();
            last_stats = t;
        }
        sleep_ms(POLL_MS);
    }
    return NULL;
}

static double next_random(void)
{
    static __thread uint64_t x;
    if (x == 0) {
        const char *seed = getenv("KMS_P11SHIM_SEED");
        unsigned long s = 0;
        if (seed == NULL || parse_ulong(seed, &s) != 0)
            s = 0x9e3779b9u;
        x = (uint64_t)s * 0x9e3779b97f4a7c15ull + (uint64_t)(uintptr_t)&x + 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return (double)(x >> 11) / 9007199254740992.0;
}

static int fires(struct rule *r, uint64_t t)
{
    if (t < r->after_ms || (r->for_ms != 0 && t >= r->after_ms + r->for_ms))
        return 0;
    unsigned long c = atomic_fetch_add(&r->calls, 1) + 1;
    if (r->nth != 0)
        return c == r->nth;
    if (r->every != 0)
        return c % r->every == 0;
    if (r->rate > 0)
        return next_random() < r->rate;
    return 1;
}

/* CKR_OK to forward the call, else what to return instead. */
static CK_RV inject(int fn)
{
    atomic_fetch_add(&S.calls, 1);
    if (atomic_load(&S.sticky) && fn != FN_C_Initialize && fn != FN_C_Finalize &&
        fn != FN_C_GetFunctionList && fn != FN_C_GetInfo) {
        atomic_fetch_add(&S.injected, 1);
        return CKR_SESSION_HANDLE_INVALID;
    }
    CK_RV rv = CKR_OK;
    unsigned long delay = 0;
    pthread_rwlock_rdlock(&S.rules_lock);
    uint64_t t = now_ms() - S.t0_ms;
    for (size_t i = 0; i < S.nrules && rv == CKR_OK; i++) {
        struct rule *r = &S.rules[i];
        if (r->fn != -1 && r->fn != fn)
            continue;
        if (!fires(r, t))
            continue;
        switch (r->kind) {
        case RULE_DELAY:
            delay += r->delay_ms;
            break;
        case RULE_STICKY:
            atomic_store(&S.sticky, 1);
            rv = r->rv;
            break;
        case RULE_FAULT:
            rv = r->rv;
            break;
        default:
            rv = CKR_GENERAL_ERROR;
            break;
        }
    }
    pthread_rwlock_unlock(&S.rules_lock);
    if (delay > 0) {
        atomic_fetch_add(&S.delayed, 1);
        sleep_ms(delay);
    }
    if (rv != CKR_OK)
        atomic_fetch_add(&S.injected, 1);
    return rv;
}

/* ---- sessions ---------------------------------------------------------------------- */

static void session_opened(CK_SLOT_ID slot, CK_SESSION_HANDLE h)
{
    atomic_fetch_add(&S.opens, 1);
    pthread_mutex_lock(&S.sess_mu);
    if (S.nsess < MAX_SESSIONS) {
        S.sess[S.nsess] = h;
        S.sess_slot[S.nsess] = slot;
        S.nsess++;
    }
    pthread_mutex_unlock(&S.sess_mu);
}

static void session_closed(CK_SESSION_HANDLE h)
{
    pthread_mutex_lock(&S.sess_mu);
    for (size_t i = 0; i < S.nsess; i++)
        if (S.sess[i] == h) {
            S.sess[i] = S.sess[S.nsess - 1];
            S.sess_slot[i] = S.sess_slot[S.nsess - 1];
            S.nsess--;
            atomic_fetch_add(&S.closes, 1);
            break;
        }
    pthread_mutex_unlock(&S.sess_mu);
}

static void slot_closed(CK_SLOT_ID slot)
{
    pthread_mutex_lock(&S.sess_mu);
    for (size_t i = 0; i < S.nsess;)
        if (S.sess_slot[i] == slot) {
            S.sess[i] = S.sess[S.nsess - 1];
            S.sess_slot[i] = S.sess_slot[S.nsess - 1];
            S.nsess--;
            atomic_fetch_add(&S.closes, 1);
        } else {
            i++;
        }
    pthread_mutex_unlock(&S.sess_mu);
}

/* ---- loading the real module --------------------------------------------------------- */

static int load_real(void)
{
    pthread_mutex_lock(&S.load_mu);
    if (S.real == NULL) {
        const char *path = getenv("KMS_P11SHIM_MODULE");
        if (path == NULL || path[0] == '\0')
            path = KMS_P11SHIM_DEFAULT_MODULE;
        S.module = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
        CK_C_GetFunctionList get = NULL;
        if (S.module != NULL) {
            void *sym = dlsym(S.module, "C_GetFunctionList");
            memcpy(&get, &sym, sizeof(get));
        }
        CK_FUNCTION_LIST_PTR list = NULL;
        if (get == NULL || get(&list) != CKR_OK || list == NULL)
            fprintf(stderr, "p11shim: cannot load %s: %s\n", path,
                    S.module == NULL ? dlerror() : "no usable C_GetFunctionList");
        else
            S.real = list;

        const char *cfg = getenv("KMS_P11SHIM_CONFIG");
        const char *inline_rules = getenv("KMS_P11SHIM_RULES");
        if (cfg != NULL && cfg[0] != '\0') {
            snprintf(S.config, sizeof(S.config), "%s", cfg);
            poll_config();
        } else if (inline_rules != NULL) {
            char text[4096];
            snprintf(text, sizeof(text), "%s", inline_rules);
            install(text, ';');
        } else {
            char empty[1] = "";
            install(empty, ';');
        }
    }
    int ok = S.real != NULL;
    pthread_mutex_unlock(&S.load_mu);
    return ok;
}

/* ---- the wrappers ---------------------------------------------------------------------- */

#define CHECKED(name)                                                                              \
    CK_RV rv_ = inject(FN_##name);                                                                 \
    if (rv_ != CKR_OK)                                                                             \
        return rv_;                                                                                \
    if (S.real == NULL)                                                                            \
        return CKR_CRYPTOKI_NOT_INITIALIZED;

static CK_RV shim_C_Initialize(void *init_args)
{
    if (!load_real())
        return CKR_GENERAL_ERROR;
    CHECKED(C_Initialize)
    CK_RV rv = S.real->C_Initialize(init_args);
    if (rv != CKR_OK)
        return rv;
    atomic_fetch_add(&S.initialize, 1);
    atomic_store(&S.sticky, 0);
    pthread_mutex_lock(&S.thr_mu);
    if (!S.thr_running) {
        atomic_store(&S.thr_stop, 0);
        S.thr_running = pthread_create(&S.thr, NULL, poller, NULL) == 0;
    }
    pthread_mutex_unlock(&S.thr_mu);
    return CKR_OK;
}

static CK_RV shim_C_Finalize(void *reserved)
{
    CHECKED(C_Finalize)
    CK_RV rv = S.real->C_Finalize(reserved);
    if (rv != CKR_OK)
        return rv;
    atomic_fetch_add(&S.finalize, 1);
    atomic_store(&S.sticky, 0);
    pthread_mutex_lock(&S.sess_mu);
    atomic_fetch_add(&S.dropped, S.nsess);
    S.nsess = 0;
    pthread_mutex_unlock(&S.sess_mu);
    pthread_mutex_lock(&S.thr_mu);
    if (S.thr_running) {
        atomic_store(&S.thr_stop, 1);
        pthread_join(S.thr, NULL);
        S.thr_running = 0;
    }
    pthread_mutex_unlock(&S.thr_mu);
    write_stats();
    return CKR_OK;
}

static CK_FUNCTION_LIST shim_list;

static CK_RV shim_C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR out)
{
    if (out == NULL)
        return CKR_ARGUMENTS_BAD;
    *out = &shim_list;
    return CKR_OK;
}

static CK_RV shim_C_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, void *app, CK_NOTIFY notify,
                                CK_SESSION_HANDLE_PTR session)
{
    CHECKED(C_OpenSession)
    CK_RV rv = S.real->C_OpenSession(slot, flags, app, notify, session);
    if (rv == CKR_OK)
        session_opened(slot, *session);
    return rv;
}

static CK_RV shim_C_CloseSession(CK_SESSION_HANDLE session)
{
    if (atomic_load(&S.sticky) && S.real != NULL) {
        atomic_fetch_add(&S.calls, 1);
        if (S.real->C_CloseSession(session) == CKR_OK)
            session_closed(session);
        return CKR_SESSION_HANDLE_INVALID;
    }
    CHECKED(C_CloseSession)
    CK_RV rv = S.real->C_CloseSession(session);
    if (rv == CKR_OK)
        session_closed(session);
    return rv;
}

static CK_RV shim_C_CloseAllSessions(CK_SLOT_ID slot)
{
    if (atomic_load(&S.sticky) && S.real != NULL) {
        atomic_fetch_add(&S.calls, 1);
        if (S.real->C_CloseAllSessions(slot) == CKR_OK)
            slot_closed(slot);
        return CKR_SESSION_HANDLE_INVALID;
    }
    CHECKED(C_CloseAllSessions)
    CK_RV rv = S.real->C_CloseAllSessions(slot);
    if (rv == CKR_OK)
        slot_closed(slot);
    return rv;
}

/* Every function: inject, else forward. The six above replace theirs in
 * the list. */
#define X(name, params, args)                                                                      \
    __attribute__((unused)) static CK_RV fwd_##name params                                         \
    {                                                                                              \
        CHECKED(name)                                                                              \
        return S.real->name args;                                                                  \
    }
P11SHIM_FUNCTIONS(X)
#undef X

static void build_list(void)
{
    shim_list.version.major = 2;
    shim_list.version.minor = 40;
#define X(name, params, args) shim_list.name = fwd_##name;
    P11SHIM_FUNCTIONS(X)
#undef X
    shim_list.C_Initialize = shim_C_Initialize;
    shim_list.C_Finalize = shim_C_Finalize;
    shim_list.C_GetFunctionList = shim_C_GetFunctionList;
    shim_list.C_OpenSession = shim_C_OpenSession;
    shim_list.C_CloseSession = shim_C_CloseSession;
    shim_list.C_CloseAllSessions = shim_C_CloseAllSessions;
}

static pthread_once_t list_once = PTHREAD_ONCE_INIT;

EXPORT CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR out)
{
    pthread_once(&list_once, build_list);
    return shim_C_GetFunctionList(out);
}
