/* The TPM2 backend on a real swtpm: what only TPM2 has. What every
 * backend must do (round trips, tampering, the wrong version, references,
 * destroy, a reset or restart between calls, healing after loss,
 * concurrency) is in the backend contract suite, test_backend_contract.c,
 * which runs on both modes.
 *
 * Here: provisioning; a reference of the other mode or damaged inside the
 * TPM-encrypted part is refused; a sealed key bound to a PCR is refused
 * once the PCR changes (and names it) while other keys keep working (PCR
 * 17 changed through swtpm's control channel while kms holds the TPM, PCR
 * 16 through tpm2_pcrextend); the resident mode's loaded-key cache
 * survives slot pressure, release, destroy and callers of both modes at
 * once; a stopped TPM leaves open sealed keys working; a second process
 * cannot open a TPM kms holds; and references made on one TPM do not open
 * on another. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "group_run.h"
#include "kms/error.h"
#include "swtpm_fixture.h"
#include "tpm2/kms_tpm2.h"

static kms_test_swtpm T;
static kms_backend *SEALED, *RESIDENT;
static const uint8_t KEY_ID[16] = {0x71, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

static int group_setup(void **state)
{
    (void)state;
    setenv("TSS2_LOG", "all+none", 1);
    kms_test_swtpm_start(&T);
    kms_tpm2_config c = {.tcti = T.tcti, .lock_dir = T.dir};
    assert_int_equal(kms_tpm2_open(&c, &SEALED, &RESIDENT), KMS_EPRECOND); /* not provisioned */
    assert_int_equal(kms_tpm2_provision(&c), 0);
    assert_int_equal(kms_tpm2_provision(&c), 0); /* idempotent */
    assert_int_equal(kms_tpm2_open(&c, &SEALED, &RESIDENT), 0);
    assert_string_equal(SEALED->ops->name, "tpm2");
    assert_string_equal(kms_backend_mode_of(SEALED).name, "sealed");
    assert_string_equal(RESIDENT->ops->name, "tpm2");
    assert_string_equal(kms_backend_mode_of(RESIDENT).name, "resident");
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    SEALED->ops->close(SEALED);
    RESIDENT->ops->close(RESIDENT);
    kms_test_swtpm_destroy(&T);
    return 0;
}

/* A reference of the other mode is refused, not misused; one damaged
 * inside the TPM-encrypted private part does not open. (Round trips,
 * tampering, malformed references, random and health are contract cases.) */
static void other_mode_and_damaged_refs_refused(void **state)
{
    (void)state;
    kms_backend_ref rs, rr;
    assert_int_equal(SEALED->ops->create_version(SEALED, KEY_ID, 1, &rs), 0);
    assert_int_equal(RESIDENT->ops->create_version(RESIDENT, KEY_ID, 2, &rr), 0);
    kms_backend_key *k = NULL;
    assert_int_equal(SEALED->ops->open_version(SEALED, &rr, &k), KMS_EKEYCHECK);
    assert_int_equal(RESIDENT->ops->open_version(RESIDENT, &rs, &k), KMS_EKEYCHECK);
    kms_backend_ref bad = rs;
    bad.len -= 3;
    assert_int_equal(SEALED->ops->open_version(SEALED, &bad, &k), KMS_ENOTFOUND);
    bad = rs;
    bad.bytes[bad.len - 5] ^= 1; /* inside the TPM-encrypted private part */
    assert_int_not_equal(SEALED->ops->open_version(SEALED, &bad, &k), 0);
    assert_null(k);
}

static void pcr_policy(void **state)
{
    (void)state;
    kms_tpm2_config c = {.tcti = T.tcti, .lock_dir = T.dir, .pcr_mask = 1u << 17};
    kms_backend *bound = NULL;
    /* A second owner on the same TPM would collide: close ours first. */
    SEALED->ops->close(SEALED);
    RESIDENT->ops->close(RESIDENT);
    assert_int_equal(kms_tpm2_open(&c, &bound, NULL), 0);
    kms_backend_ref ref, free_ref;
    assert_int_equal(bound->ops->create_version(bound, KEY_ID, 20, &ref), 0);
    kms_backend_key *k = NULL;
    assert_int_equal(bound->ops->open_version(bound, &ref, &k), 0);
    bound->ops->release_version(bound, k);
    bound->ops->close(bound);
    /* An unbound key made before the change keeps working after it. */
    kms_tpm2_config plain = {.tcti = T.tcti, .lock_dir = T.dir};
    assert_int_equal(kms_tpm2_open(&plain, &SEALED, &RESIDENT), 0);
    assert_int_equal(SEALED->ops->create_version(SEALED, KEY_ID, 21, &free_ref), 0);

    assert_int_equal(kms_test_swtpm_extend17(&T), 0);
    k = NULL;
    assert_int_equal(SEALED->ops->open_version(SEALED, &ref, &k), KMS_EPRECOND);
    assert_null(k);
    assert_non_null(strstr(kms_error_detail(), "PCRs 17"));
    assert_int_equal(SEALED->ops->open_version(SEALED, &free_ref, &k), 0);
    SEALED->ops->release_version(SEALED, k);
    assert_int_equal(SEALED->ops->health(SEALED), 0);
}

/* One 32-byte wrap and its unwrap; returns the unwrap's result. */
static int wrap_unwrap(kms_backend *b, kms_backend_key *wk, kms_backend_key *uk)
{
    uint8_t pt[32], ct[32], back[32];
    RAND_bytes(pt, sizeof(pt));
    kms_aead_io w = {.in = pt, .in_len = 32, .out = ct};
    int r = b->ops->wrap(b, wk, &w);
    if (r != 0)
        return r;
    kms_aead_io u = {.in = ct, .in_len = 32, .out = back};
    memcpy(u.iv, w.iv, 12);
    memcpy(u.tag, w.tag, 16);
    r = b->ops->unwrap(b, uk, &u);
    if (r == 0 && memcmp(back, pt, 32) != 0)
        r = KMS_EINTERNAL;
    return r;
}

static void close_all(void)
{
    SEALED->ops->close(SEALED);
    RESIDENT->ops->close(RESIDENT);
    SEALED = RESIDENT = NULL;
}

/* PCR 16 changed with tpm2_pcrextend, another client of the TPM, while kms
 * holds it (the swtpm TCTI connects per command): the key bound to it is
 * refused naming PCR 16, everything else keeps being served. */
static void pcr16_policy(void **state)
{
    (void)state;
    kms_tpm2_config c16 = {.tcti = T.tcti, .lock_dir = T.dir, .pcr_mask = 1u << 16};
    kms_backend_ref bound_ref, bound2_ref, free_ref, res_ref, now;
    kms_backend_key *k = NULL, *open_bound = NULL, *kr = NULL;
    /* An unbound sealed key, made by the plain backend. */
    assert_int_equal(SEALED->ops->create_version(SEALED, KEY_ID, 51, &free_ref), 0);
    close_all();
    assert_int_equal(kms_tpm2_open(&c16, &SEALED, &RESIDENT), 0);
    assert_int_equal(SEALED->ops->create_version(SEALED, KEY_ID, 50, &bound_ref), 0);
    assert_int_equal(SEALED->ops->create_version(SEALED, KEY_ID, 54, &bound2_ref), 0);
    assert_int_equal(SEALED->ops->open_version(SEALED, &bound2_ref, &open_bound), 0);
    assert_int_equal(RESIDENT->ops->create_version(RESIDENT, KEY_ID, 52, &res_ref), 0);
    assert_int_equal(RESIDENT->ops->open_version(RESIDENT, &res_ref, &kr), 0);

    assert_int_equal(kms_test_swtpm_pcrextend(&T, 16), 0);

    kms_error_clear();
    assert_int_equal(SEALED->ops->open_version(SEALED, &bound_ref, &k), KMS_EPRECOND);
    assert_null(k);
    assert_non_null(strstr(kms_error_detail(), "PCRs 16:"));
    /* Everything else is still served: an unbound key, a bound key opened
     * before the change (from memory), a resident key, new keys. */
    assert_int_equal(SEALED->ops->open_version(SEALED, &free_ref, &k), 0);
    assert_int_equal(wrap_unwrap(SEALED, k, k), 0);
    SEALED->ops->release_version(SEALED, k);
    assert_int_equal(wrap_unwrap(SEALED, open_bound, open_bound), 0);
    assert_int_equal(wrap_unwrap(RESIDENT, kr, kr), 0);
    assert_int_equal(SEALED->ops->health(SEALED), 0);
    assert_int_equal(SEALED->ops->create_version(SEALED, KEY_ID, 53, &now), 0);
    assert_int_equal(SEALED->ops->open_version(SEALED, &now, &k), 0);
    SEALED->ops->release_version(SEALED, k);
    /* Still refused on a second attempt (no state kept from the first). */
    assert_int_equal(SEALED->ops->open_version(SEALED, &bound_ref, &k), KMS_EPRECOND);
    SEALED->ops->release_version(SEALED, open_bound);
    RESIDENT->ops->release_version(RESIDENT, kr);
    close_all();
    kms_tpm2_config plain = {.tcti = T.tcti, .lock_dir = T.dir};
    assert_int_equal(kms_tpm2_open(&plain, &SEALED, &RESIDENT), 0);
}

/* Resident keys: the last used one stays loaded. Alternating versions,
 * unsealing beside a loaded key (swtpm: three object slots), releasing and
 * destroying the cached one all keep working. */
static void resident_cache(void **state)
{
    (void)state;
    kms_backend_ref ra, rb, rs;
    kms_backend_key *ka, *kb, *ks, *ka2;
    assert_int_equal(RESIDENT->ops->create_version(RESIDENT, KEY_ID, 60, &ra), 0);
    assert_int_equal(RESIDENT->ops->create_version(RESIDENT, KEY_ID, 61, &rb), 0);
    assert_int_equal(SEALED->ops->create_version(SEALED, KEY_ID, 62, &rs), 0);
    assert_int_equal(RESIDENT->ops->open_version(RESIDENT, &ra, &ka), 0);
    assert_int_equal(RESIDENT->ops->open_version(RESIDENT, &rb, &kb), 0);
    assert_int_equal(RESIDENT->ops->open_version(RESIDENT, &ra, &ka2), 0);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(wrap_unwrap(RESIDENT, ka, ka), 0);
        assert_int_equal(wrap_unwrap(RESIDENT, kb, kb), 0);
        assert_int_equal(wrap_unwrap(RESIDENT, ka, ka2), 0); /* two openings, one key */
        assert_int_equal(wrap_unwrap(RESIDENT, ka, kb), KMS_EAUTH);
    }
    /* Unseal while a resident key is loaded. */
    assert_int_equal(SEALED->ops->open_version(SEALED, &rs, &ks), 0);
    assert_int_equal(wrap_unwrap(SEALED, ks, ks), 0);
    SEALED->ops->release_version(SEALED, ks);
    /* Someone else flushed every transient object (the loaded key too):
     * the stale handle is noticed, the key loaded again, the call works. */
    assert_int_equal(wrap_unwrap(RESIDENT, kb, kb), 0);
    assert_int_equal(kms_test_swtpm_tool(&T, "flushcontext -t"), 0);
    assert_int_equal(wrap_unwrap(RESIDENT, kb, kb), 0);
    /* Release the cached opening; the other still works. */
    assert_int_equal(wrap_unwrap(RESIDENT, kb, kb), 0);
    RESIDENT->ops->release_version(RESIDENT, kb);
    assert_int_equal(wrap_unwrap(RESIDENT, ka, ka), 0);
    /* destroy: nothing on the chip; the cached handle goes; 0. */
    assert_int_equal(RESIDENT->ops->destroy_version(RESIDENT, &ra), 0);
    assert_int_equal(SEALED->ops->destroy_version(SEALED, &rs), 0);
    kms_backend_ref junk = {.len = 5};
    assert_int_equal(SEALED->ops->destroy_version(SEALED, &junk), KMS_ENOTFOUND);
    RESIDENT->ops->release_version(RESIDENT, ka);
    RESIDENT->ops->release_version(RESIDENT, ka2);
}

struct worker {
    kms_backend_key *keys[3];
    kms_backend *backends[3];
    int failures;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < 150; i++) {
        int j = i % 3;
        if (wrap_unwrap(w->backends[j], w->keys[j], w->keys[j]) != 0)
            w->failures++;
    }
    return NULL;
}

/* Several threads on one backend pair: the TPM is used by one at a time. */
static void concurrent_callers(void **state)
{
    (void)state;
    kms_backend_ref r[3];
    struct worker w = {.backends = {RESIDENT, RESIDENT, SEALED}};
    assert_int_equal(RESIDENT->ops->create_version(RESIDENT, KEY_ID, 70, &r[0]), 0);
    assert_int_equal(RESIDENT->ops->create_version(RESIDENT, KEY_ID, 71, &r[1]), 0);
    assert_int_equal(SEALED->ops->create_version(SEALED, KEY_ID, 72, &r[2]), 0);
    for (int j = 0; j < 3; j++)
        assert_int_equal(w.backends[j]->ops->open_version(w.backends[j], &r[j], &w.keys[j]), 0);
    struct worker ws[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        ws[i] = w;
        assert_int_equal(pthread_create(&th[i], NULL, work, &ws[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(ws[i].failures, 0);
    }
    for (int j = 0; j < 3; j++)
        w.backends[j]->ops->release_version(w.backends[j], w.keys[j]);
}

/* A stopped TPM: sealed keys already open keep working (their key is in
 * memory), resident keys and health answer KMS_EUNAVAIL; restarted, the
 * same openings work again. (A reset or restart between two calls, and
 * healing after loss, are contract cases for each mode.) */
static void stopped_tpm_keeps_open_sealed_keys(void **state)
{
    (void)state;
    kms_backend_ref rs, rr;
    kms_backend_key *ks, *kr;
    assert_int_equal(SEALED->ops->create_version(SEALED, KEY_ID, 30, &rs), 0);
    assert_int_equal(RESIDENT->ops->create_version(RESIDENT, KEY_ID, 31, &rr), 0);
    assert_int_equal(SEALED->ops->open_version(SEALED, &rs, &ks), 0);
    assert_int_equal(RESIDENT->ops->open_version(RESIDENT, &rr, &kr), 0);
    assert_int_equal(wrap_unwrap(RESIDENT, kr, kr), 0);

    kms_test_swtpm_stop(&T);
    assert_int_equal(SEALED->ops->health(SEALED), KMS_EUNAVAIL);
    assert_int_equal(RESIDENT->ops->health(RESIDENT), KMS_EUNAVAIL);
    assert_int_equal(wrap_unwrap(SEALED, ks, ks), 0);
    assert_int_equal(wrap_unwrap(RESIDENT, kr, kr), KMS_EUNAVAIL);
    kms_test_swtpm_resume(&T);
    int ok = 0;
    for (int i = 0; i < 50 && !ok; i++) {
        ok = SEALED->ops->health(SEALED) == 0;
        if (!ok)
            usleep(100 * 1000);
    }
    assert_true(ok);
    assert_int_equal(wrap_unwrap(RESIDENT, kr, kr), 0);
    assert_int_equal(wrap_unwrap(SEALED, ks, ks), 0);
    SEALED->ops->release_version(SEALED, ks);
    RESIDENT->ops->release_version(RESIDENT, kr);
}

/* References are bound to their TPM: another one cannot open them. */
/* One kms process per TPM: while this process has the TPM open, another
 * process (a forked child here) cannot open or provision it, and is told
 * who holds it; once closed, it can. */
static int child_open(const kms_tpm2_config *c, int provision)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        kms_backend *s = NULL, *r = NULL;
        kms_error_clear();
        int rc = provision ? kms_tpm2_provision(c) : kms_tpm2_open(c, &s, &r);
        char holder[64];
        snprintf(holder, sizeof(holder), "(pid %ld,", (long)getppid());
        if (rc == 0) {
            s->ops->close(s);
            r->ops->close(r);
            _exit(0);
        }
        _exit(rc == KMS_EPRECOND && strstr(kms_error_detail(), holder) != NULL ? 10 : 20);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void one_process_per_tpm(void **state)
{
    (void)state;
    kms_tpm2_config c = {.tcti = T.tcti, .lock_dir = T.dir};
    assert_int_equal(child_open(&c, 0), 10); /* refused, naming this process */
    assert_int_equal(child_open(&c, 1), 10);
    /* In this process too: a second opening would flush the first's keys. */
    kms_backend *s2 = NULL;
    kms_error_clear();
    assert_int_equal(kms_tpm2_open(&c, &s2, NULL), KMS_EPRECOND);
    assert_null(s2);
    assert_non_null(strstr(kms_error_detail(), "one kms process per TPM"));
    /* Ours keeps working. */
    assert_int_equal(SEALED->ops->health(SEALED), 0);
    /* Closed: the child can open it. */
    close_all();
    assert_int_equal(child_open(&c, 0), 0);
    assert_int_equal(kms_tpm2_open(&c, &SEALED, &RESIDENT), 0);
}

static void other_tpm_refuses(void **state)
{
    (void)state;
    kms_backend_ref rs, rr;
    assert_int_equal(SEALED->ops->create_version(SEALED, KEY_ID, 40, &rs), 0);
    assert_int_equal(RESIDENT->ops->create_version(RESIDENT, KEY_ID, 41, &rr), 0);
    kms_test_swtpm other;
    kms_test_swtpm_start(&other);
    kms_tpm2_config c = {.tcti = other.tcti, .lock_dir = other.dir};
    kms_backend *s2, *r2;
    assert_int_equal(kms_tpm2_provision(&c), 0);
    assert_int_equal(kms_tpm2_open(&c, &s2, &r2), 0);
    kms_backend_key *k = NULL;
    assert_int_equal(s2->ops->open_version(s2, &rs, &k), KMS_EKEYCHECK);
    assert_null(k);
    assert_int_equal(r2->ops->open_version(r2, &rr, &k), KMS_EKEYCHECK);
    assert_null(k);
    s2->ops->close(s2);
    r2->ops->close(r2);
    kms_test_swtpm_destroy(&other);
}

/* The primary's name is recorded at provisioning and checked at every
 * open: another object put at the handle (ours evicted, a new primary
 * made and persisted there with tpm2-tools) is refused by open and by
 * provisioning, and a missing record is refused too. The old code used
 * whatever object sat at the handle. */
static void replaced_primary_refused(void **state)
{
    (void)state;
    kms_test_swtpm other;
    kms_test_swtpm_start(&other);
    char name_file[600];
    snprintf(name_file, sizeof(name_file), "%s/kms.db.tpm2-primary", other.dir);
    kms_tpm2_config c = {.tcti = other.tcti, .lock_dir = other.dir, .primary_name_file = name_file};
    kms_backend *s2 = NULL, *r2 = NULL;
    assert_int_equal(kms_tpm2_open(&c, &s2, &r2), KMS_EPRECOND); /* nothing recorded yet */
    assert_non_null(strstr(kms_error_detail(), "tpm2-provision"));
    assert_int_equal(kms_tpm2_provision(&c), 0);
    assert_int_equal(access(name_file, R_OK), 0);
    assert_int_equal(kms_tpm2_provision(&c), 0); /* the same one: fine */
    assert_int_equal(kms_tpm2_open(&c, &s2, &r2), 0);
    s2->ops->close(s2);
    r2->ops->close(r2);

    char args[700];
    assert_int_equal(kms_test_swtpm_tool(&other, "evictcontrol -C o -c 0x81000101"), 0);
    snprintf(args, sizeof(args), "createprimary -C o -G rsa -c %s/evil.ctx", other.dir);
    assert_int_equal(kms_test_swtpm_tool(&other, args), 0);
    snprintf(args, sizeof(args), "evictcontrol -C o -c %s/evil.ctx 0x81000101", other.dir);
    assert_int_equal(kms_test_swtpm_tool(&other, args), 0);

    s2 = r2 = NULL;
    assert_int_equal(kms_tpm2_open(&c, &s2, &r2), KMS_EPRECOND);
    assert_null(s2);
    if (strstr(kms_error_detail(), "is not the storage primary") == NULL)
        fail_msg("detail: %s", kms_error_detail());
    assert_int_equal(kms_tpm2_provision(&c), KMS_EPRECOND);
    /* Without a record (as before this check existed) it would be used. */
    kms_tpm2_config unchecked = {.tcti = other.tcti, .lock_dir = other.dir};
    assert_int_equal(kms_tpm2_open(&unchecked, &s2, &r2), 0);
    s2->ops->close(s2);
    r2->ops->close(r2);
    kms_test_swtpm_destroy(&other);
}

/* ---- a listener on the TPM bus ---------------------------------------------------- */

/* A TCP relay between the TCTI and a swtpm that records every byte of the
 * data channel, both ways: what a sniffer on the LPC/SPI bus would see. */
struct bus_tap {
    int listen_fd[2]; /* data port Q, control port Q+1 */
    int upstream_port;
    int port;
    pthread_t thread[2];
    pthread_mutex_t mu;
    uint8_t *seen;
    size_t seen_len, seen_cap;
    volatile int stop;
};

struct tap_arg {
    struct bus_tap *t;
    int which;
};

static void tap_record(struct bus_tap *t, const uint8_t *p, size_t n)
{
    pthread_mutex_lock(&t->mu);
    if (t->seen_len + n > t->seen_cap) {
        size_t cap = (t->seen_len + n) * 2;
        t->seen = realloc(t->seen, cap);
        assert_non_null(t->seen);
        t->seen_cap = cap;
    }
    memcpy(t->seen + t->seen_len, p, n);
    t->seen_len += n;
    pthread_mutex_unlock(&t->mu);
}

static void *tap_run(void *arg)
{
    struct tap_arg *a = arg;
    struct bus_tap *t = a->t;
    while (!t->stop) {
        struct pollfd lp = {t->listen_fd[a->which], POLLIN, 0};
        if (poll(&lp, 1, 100) <= 0)
            continue;
        int c = accept(t->listen_fd[a->which], NULL, NULL);
        if (c < 0)
            continue;
        int u = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in to = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)(t->upstream_port + a->which)),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (connect(u, (struct sockaddr *)&to, sizeof(to)) != 0) {
            close(c);
            close(u);
            continue;
        }
        struct pollfd fds[2] = {{c, POLLIN, 0}, {u, POLLIN, 0}};
        for (int open_ = 1; open_ && !t->stop;) {
            if (poll(fds, 2, 100) <= 0)
                continue;
            for (int i = 0; i < 2 && open_; i++) {
                if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                    continue;
                uint8_t buf[8192];
                ssize_t n = read(fds[i].fd, buf, sizeof(buf));
                if (n <= 0) {
                    open_ = 0;
                    break;
                }
                if (a->which == 0)
                    tap_record(t, buf, (size_t)n);
                if (write(fds[1 - i].fd, buf, (size_t)n) != n)
                    open_ = 0;
            }
        }
        close(c);
        close(u);
    }
    return NULL;
}

/* Listens on 127.0.0.1:port (0: any free port, written to *bound). */
static int tap_listen(int port, int *bound)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 4) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        close(fd);
        return -1;
    }
    *bound = ntohs(a.sin_port);
    return fd;
}

static struct tap_arg TAP_ARGS[2];

static void tap_start(struct bus_tap *t, int upstream_port)
{
    memset(t, 0, sizeof(*t));
    pthread_mutex_init(&t->mu, NULL);
    t->upstream_port = upstream_port;
    for (int tries = 0; tries < 50; tries++) {
        int ctrl_port = 0;
        t->listen_fd[0] = tap_listen(0, &t->port);
        assert_true(t->listen_fd[0] >= 0);
        if (t->port < 65535 && (t->listen_fd[1] = tap_listen(t->port + 1, &ctrl_port)) >= 0)
            break;
        close(t->listen_fd[0]);
        t->port = 0;
    }
    assert_int_not_equal(t->port, 0);
    for (int i = 0; i < 2; i++) {
        TAP_ARGS[i] = (struct tap_arg){t, i};
        assert_int_equal(pthread_create(&t->thread[i], NULL, tap_run, &TAP_ARGS[i]), 0);
    }
}

static void tap_stop(struct bus_tap *t)
{
    t->stop = 1;
    for (int i = 0; i < 2; i++) {
        pthread_join(t->thread[i], NULL);
        close(t->listen_fd[i]);
    }
    pthread_mutex_destroy(&t->mu);
}

/* The attacker: every 32-byte window of the traffic tried as the AES-256
 * key of one wrap's output. 1 if one decrypts it. */
static int some_window_decrypts(const struct bus_tap *t, const kms_aead_io *io)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int found = 0;
    for (size_t off = 0; !found && off + 32 <= t->seen_len; off++) {
        uint8_t out[64];
        int n = 0;
        if (EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, t->seen + off, io->iv) != 1 ||
            EVP_DecryptUpdate(c, NULL, &n, io->aad, (int)io->aad_len) != 1 ||
            EVP_DecryptUpdate(c, out, &n, io->in, (int)io->in_len) != 1 ||
            EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, (void *)io->tag) != 1)
            continue;
        found = EVP_DecryptFinal_ex(c, out + n, &n) == 1;
    }
    EVP_CIPHER_CTX_free(c);
    return found;
}

/* Parameter encryption: a listener on the bus (here, on the swtpm socket)
 * sees every command and response of creating, unsealing and using a key
 * version, in both modes, and no 32-byte window of it is the key of a
 * wrap made meanwhile. The old code sent the sealed key in TPM2_Create
 * and got it back from TPM2_Unseal in the clear, and each TPM2_HMAC
 * response was a blob's one-time key: this finds them. */
static void bus_listener_learns_no_key(void **state)
{
    (void)state;
    kms_test_swtpm other;
    kms_test_swtpm_start(&other);
    kms_tpm2_config c = {.tcti = other.tcti, .lock_dir = other.dir};
    assert_int_equal(kms_tpm2_provision(&c), 0);
    for (int mode = 0; mode < 2; mode++) {
        struct bus_tap tap;
        tap_start(&tap, other.port);
        char tcti[96];
        snprintf(tcti, sizeof(tcti), "swtpm:host=127.0.0.1,port=%d", tap.port);
        kms_tpm2_config via = {.tcti = tcti, .lock_dir = other.dir};
        kms_backend *s2 = NULL, *r2 = NULL;
        assert_int_equal(kms_tpm2_open(&via, &s2, &r2), 0);
        kms_backend *b = mode == 0 ? s2 : r2;
        kms_backend_ref ref;
        kms_backend_key *k = NULL;
        assert_int_equal(b->ops->create_version(b, KEY_ID, 60 + (uint32_t)mode, &ref), 0);
        assert_int_equal(b->ops->open_version(b, &ref, &k), 0);
        uint8_t pt[32] = {1, 2, 3}, ct[32], aad[] = "bus";
        kms_aead_io io = {.aad = aad, .aad_len = sizeof(aad), .in = pt, .in_len = 32, .out = ct};
        assert_int_equal(b->ops->wrap(b, k, &io), 0);
        b->ops->release_version(b, k);
        s2->ops->close(s2);
        r2->ops->close(r2);
        tap_stop(&tap);
        kms_aead_io seen = io;
        seen.in = ct;
        assert_true(tap.seen_len > 100); /* the commands did go through the tap */
        if (some_window_decrypts(&tap, &seen))
            fail_msg("%s mode: the key of a wrap is in the bus traffic",
                     mode == 0 ? "sealed" : "resident");
        free(tap.seen);
    }
    kms_test_swtpm_destroy(&other);
}

/* One wrap and unwrap round trip through b's version ref: 0 or the first
 * error (open, wrap or unwrap). */
static int use_ref(kms_backend *b, const kms_backend_ref *ref)
{
    kms_backend_key *k = NULL;
    int r = b->ops->open_version(b, ref, &k);
    if (r != 0)
        return r;
    uint8_t pt[32] = {9}, ct[32], back[32];
    kms_aead_io io = {.in = pt, .in_len = 32, .out = ct};
    r = b->ops->wrap(b, k, &io);
    if (r == 0) {
        kms_aead_io un = io;
        un.in = ct;
        un.out = back;
        r = b->ops->unwrap(b, k, &un);
    }
    b->ops->release_version(b, k);
    return r;
}

/* Object auth: versions made with an auth secret (kmsd's
 * <database>.tpm2-auth) cannot be used by someone who has the references
 * (a copy of the database) and this TPM but not the secret, nor with
 * another secret, in both modes and PCR-bound; with the secret they work.
 * A reference made with an empty authValue (before this) stays readable.
 * The old code made every object with an empty authValue, usable by
 * anyone with the blobs and the TPM. */
static void object_auth_needs_the_secret(void **state)
{
    (void)state;
    kms_test_swtpm other;
    kms_test_swtpm_start(&other);
    char auth_a[600], auth_b[600];
    snprintf(auth_a, sizeof(auth_a), "%s/a.tpm2-auth", other.dir);
    snprintf(auth_b, sizeof(auth_b), "%s/b.tpm2-auth", other.dir);
    kms_tpm2_config plain = {.tcti = other.tcti, .lock_dir = other.dir};
    kms_tpm2_config with_a = {.tcti = other.tcti, .lock_dir = other.dir, .auth_key_file = auth_a};
    kms_tpm2_config with_b = {.tcti = other.tcti, .lock_dir = other.dir, .auth_key_file = auth_b};
    kms_tpm2_config pcr_a = with_a;
    pcr_a.pcr_mask = 1u << 16;

    kms_backend *s = NULL, *r = NULL;
    assert_int_equal(kms_tpm2_open(&with_a, &s, &r), KMS_EPRECOND); /* no secret yet */
    assert_int_equal(kms_tpm2_provision(&with_a), 0);               /* makes it, 0600 */
    assert_int_equal(kms_tpm2_provision(&with_b), 0);
    struct stat st;
    assert_int_equal(stat(auth_a, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, 32);

    /* An old-style version (empty authValue) made first. */
    kms_backend_ref old_ref, sealed_ref, resident_ref, pcr_ref;
    assert_int_equal(kms_tpm2_open(&plain, &s, &r), 0);
    assert_int_equal(s->ops->create_version(s, KEY_ID, 70, &old_ref), 0);
    s->ops->close(s);
    r->ops->close(r);
    assert_int_equal(kms_tpm2_open(&with_a, &s, &r), 0);
    assert_int_equal(s->ops->create_version(s, KEY_ID, 71, &sealed_ref), 0);
    assert_int_equal(r->ops->create_version(r, KEY_ID, 72, &resident_ref), 0);
    assert_int_equal(use_ref(s, &sealed_ref), 0);
    assert_int_equal(use_ref(r, &resident_ref), 0);
    assert_int_equal(use_ref(s, &old_ref), 0); /* kept readable */
    s->ops->close(s);
    r->ops->close(r);
    assert_int_equal(kms_tpm2_open(&pcr_a, &s, &r), 0);
    assert_int_equal(s->ops->create_version(s, KEY_ID, 73, &pcr_ref), 0);
    assert_int_equal(use_ref(s, &pcr_ref), 0);
    s->ops->close(s);
    r->ops->close(r);

    /* The attacker: same TPM, the refs, no secret or another one. */
    const kms_tpm2_config *attackers[] = {&plain, &with_b};
    for (int a = 0; a < 2; a++) {
        assert_int_equal(kms_tpm2_open(attackers[a], &s, &r), 0);
        assert_int_not_equal(use_ref(s, &sealed_ref), 0);
        assert_int_not_equal(use_ref(r, &resident_ref), 0);
        assert_int_not_equal(use_ref(s, &pcr_ref), 0);
        assert_int_equal(use_ref(s, &old_ref), 0);
        s->ops->close(s);
        r->ops->close(r);
    }
    /* And the rightful owner still can (no lockout: the objects are NODA). */
    assert_int_equal(kms_tpm2_open(&with_a, &s, &r), 0);
    assert_int_equal(use_ref(s, &sealed_ref), 0);
    assert_int_equal(use_ref(r, &resident_ref), 0);
    s->ops->close(s);
    r->ops->close(r);
    kms_test_swtpm_destroy(&other);
}

/* The state-integrity key on the TPM: a persistent keyed-hash object at
 * the handle after the primary. Its MAC needs the object auth secret (a
 * process with the TPM but without the secret, or with another, cannot
 * compute one); it is the same from both modes and after reopening; and an
 * object someone else put at its handle (here a sealed data object, not an
 * HMAC key generated in the TPM) is refused with KMS_EKEYCHECK, not used. */
static void state_key_on_the_tpm(void **state)
{
    (void)state;
    kms_test_swtpm other;
    kms_test_swtpm_start(&other);
    char auth_a[600], auth_b[600], args[900];
    snprintf(auth_a, sizeof(auth_a), "%s/a.tpm2-auth", other.dir);
    snprintf(auth_b, sizeof(auth_b), "%s/b.tpm2-auth", other.dir);
    kms_tpm2_config plain = {.tcti = other.tcti, .lock_dir = other.dir};
    kms_tpm2_config with_a = {.tcti = other.tcti, .lock_dir = other.dir, .auth_key_file = auth_a};
    kms_tpm2_config with_b = {.tcti = other.tcti, .lock_dir = other.dir, .auth_key_file = auth_b};
    assert_int_equal(kms_tpm2_provision(&with_a), 0);
    assert_int_equal(kms_tpm2_provision(&with_b), 0);
    static const uint8_t msg[] = "keys: demo primary 1";
    uint8_t m1[32], m2[32], m3[32];

    kms_backend *s = NULL, *r = NULL;
    assert_int_equal(kms_tpm2_open(&with_a, &s, &r), 0);
    assert_true(kms_backend_has_caps(s, KMS_BACKEND_CAP_STATE_MAC));
    assert_true(kms_backend_has_caps(r, KMS_BACKEND_CAP_STATE_MAC));
    assert_int_equal(s->ops->state_mac(s, msg, sizeof(msg), m1), KMS_ENOTFOUND);
    assert_int_equal(s->ops->state_key_create(s), 0);
    assert_int_equal(r->ops->state_key_create(r), KMS_EEXISTS); /* one per TPM */
    assert_int_equal(s->ops->state_mac(s, msg, sizeof(msg), m1), 0);
    assert_int_equal(r->ops->state_mac(r, msg, sizeof(msg), m2), 0);
    assert_memory_equal(m1, m2, 32);
    s->ops->close(s);
    r->ops->close(r);

    const kms_tpm2_config *attackers[] = {&plain, &with_b};
    for (int a = 0; a < 2; a++) {
        assert_int_equal(kms_tpm2_open(attackers[a], &s, &r), 0);
        assert_int_not_equal(s->ops->state_mac(s, msg, sizeof(msg), m3), 0);
        assert_int_equal(s->ops->state_key_create(s), KMS_EEXISTS); /* never replaced */
        s->ops->close(s);
        r->ops->close(r);
    }
    assert_int_equal(kms_tpm2_open(&with_a, &s, &r), 0);
    assert_int_equal(s->ops->state_mac(s, msg, sizeof(msg), m3), 0);
    assert_memory_equal(m1, m3, 32);
    s->ops->close(s);
    r->ops->close(r);

    /* Someone with the owner hierarchy swaps the object at the handle. */
    snprintf(args, sizeof(args), "evictcontrol -C o -c 0x%08x", KMS_TPM2_DEFAULT_PRIMARY + 1);
    assert_int_equal(kms_test_swtpm_tool(&other, args), 0);
    snprintf(args, sizeof(args), "%s/known.bin", other.dir);
    FILE *f = fopen(args, "w");
    assert_non_null(f);
    fputs("a key the swapper knows", f);
    fclose(f);
    snprintf(args, sizeof(args), "create -C 0x%08x -i %s/known.bin -u %s/k.pub -r %s/k.priv",
             KMS_TPM2_DEFAULT_PRIMARY, other.dir, other.dir, other.dir);
    assert_int_equal(kms_test_swtpm_tool(&other, args), 0);
    snprintf(args, sizeof(args), "load -C 0x%08x -u %s/k.pub -r %s/k.priv -c %s/k.ctx",
             KMS_TPM2_DEFAULT_PRIMARY, other.dir, other.dir, other.dir);
    assert_int_equal(kms_test_swtpm_tool(&other, args), 0);
    snprintf(args, sizeof(args), "evictcontrol -C o -c %s/k.ctx 0x%08x", other.dir,
             KMS_TPM2_DEFAULT_PRIMARY + 1);
    assert_int_equal(kms_test_swtpm_tool(&other, args), 0);
    assert_int_equal(kms_tpm2_open(&with_a, &s, &r), 0);
    assert_int_equal(s->ops->state_mac(s, msg, sizeof(msg), m3), KMS_EKEYCHECK);
    if (strstr(kms_error_detail(), "not a safe state-integrity key") == NULL)
        fail_msg("detail: %s", kms_error_detail());
    assert_int_equal(s->ops->state_key_create(s), KMS_EEXISTS);
    s->ops->close(s);
    r->ops->close(r);
    kms_test_swtpm_destroy(&other);
}

/* ---- shredding ------------------------------------------------------------------------ */

/* The NV index a reference of format 3 or 4 names (docs/tpm2.md), 0 for
 * older formats. */
static uint32_t ref_nv_index(const kms_backend_ref *ref)
{
    if (ref->len < 33 || (ref->bytes[3] != 3 && ref->bytes[3] != 4))
        return 0;
    return (uint32_t)ref->bytes[29] << 24 | (uint32_t)ref->bytes[30] << 16 |
           (uint32_t)ref->bytes[31] << 8 | ref->bytes[32];
}

/* Destroying a version shreds it: a copy of its reference taken before
 * (what a database backup or WAL file holds) no longer opens, in either
 * mode, PCR-bound or not, with or without the auth secret; nor does an
 * index an attacker with owner access defines again at the same handle
 * with other bytes (the object's authValue needs the destroyed bytes:
 * the TPM refuses). Other versions keep working. The old code's destroy
 * left the version usable from any copy of its reference. */
static void destroy_shreds_saved_copies(void **state)
{
    (void)state;
    kms_test_swtpm other;
    kms_test_swtpm_start(&other);
    char auth[600];
    snprintf(auth, sizeof(auth), "%s/kms.tpm2-auth", other.dir);
    kms_tpm2_config plain = {.tcti = other.tcti, .lock_dir = other.dir};
    kms_tpm2_config with_auth = {.tcti = other.tcti, .lock_dir = other.dir, .auth_key_file = auth};
    kms_tpm2_config pcr = with_auth;
    pcr.pcr_mask = 1u << 16;
    assert_int_equal(kms_tpm2_provision(&with_auth), 0);
    const kms_tpm2_config *configs[] = {&plain, &with_auth, &pcr};
    for (int c = 0; c < 3; c++) {
        for (int resident = 0; resident < 2; resident++) {
            kms_backend *s = NULL, *r = NULL;
            assert_int_equal(kms_tpm2_open(configs[c], &s, &r), 0);
            kms_backend *b = resident ? r : s;
            assert_true(kms_backend_has_caps(b, KMS_BACKEND_CAP_SHRED));
            uint32_t v = (uint32_t)(100 + 10 * c + 2 * resident);
            kms_backend_ref ref, keep, copy;
            assert_int_equal(b->ops->create_version(b, KEY_ID, v, &ref), 0);
            assert_int_equal(b->ops->create_version(b, KEY_ID, v + 1, &keep), 0);
            assert_int_equal(ref.bytes[3], c == 0 ? 3 : 4);
            uint32_t index = ref_nv_index(&ref);
            assert_true(index >= 0x013B0000u && index <= 0x013BFFFFu);
            assert_int_not_equal(index, ref_nv_index(&keep));
            assert_int_equal(use_ref(b, &ref), 0);
            copy = ref; /* the backup */
            kms_backend_key *open = NULL;
            assert_int_equal(b->ops->open_version(b, &ref, &open), 0);

            assert_int_equal(b->ops->destroy_version(b, &ref), 0);
            assert_int_equal(use_ref(b, &copy), KMS_ENOTFOUND);
            if (strstr(kms_error_detail(), "destroyed") == NULL)
                fail_msg("detail: %s", kms_error_detail());
            assert_int_equal(b->ops->destroy_version(b, &copy), KMS_ENOTFOUND);
            uint8_t pt[16] = {1}, ct[16];
            kms_aead_io io = {.in = pt, .in_len = sizeof(pt), .out = ct};
            assert_int_equal(b->ops->wrap(b, open, &io), KMS_ENOTFOUND);
            b->ops->release_version(b, open);
            assert_int_equal(use_ref(b, &keep), 0);

            /* The attacker defines the index again, as kms would, with
             * bytes of their own. Without the auth secret (c == 0) the
             * index's authValue is empty, so tpm2-tools can; kms then reads
             * the attacker's bytes, and the TPM refuses the object. */
            char args[700], bytes[600];
            if (c == 0) {
                uint8_t junk[32];
                assert_int_equal(RAND_bytes(junk, sizeof(junk)), 1);
                snprintf(bytes, sizeof(bytes), "%s/junk.bin", other.dir);
                FILE *f = fopen(bytes, "wb");
                assert_non_null(f);
                assert_int_equal(fwrite(junk, 1, sizeof(junk), f), sizeof(junk));
                assert_int_equal(fclose(f), 0);
                snprintf(args, sizeof(args),
                         "nvdefine 0x%08x -C o -s 32 -a \"authread|authwrite|no_da\"", index);
                assert_int_equal(kms_test_swtpm_tool(&other, args), 0);
                snprintf(args, sizeof(args), "nvwrite 0x%08x -i %s", index, bytes);
                assert_int_equal(kms_test_swtpm_tool(&other, args), 0);
                int rr = use_ref(b, &copy);
                assert_int_not_equal(rr, 0);
                assert_int_not_equal(rr, KMS_ENOTFOUND); /* the TPM itself refuses */
                snprintf(args, sizeof(args), "nvundefine 0x%08x -C o", index);
                assert_int_equal(kms_test_swtpm_tool(&other, args), 0);
            }
            s->ops->close(s);
            r->ops->close(r);
        }
    }
    kms_test_swtpm_destroy(&other);
}

/* When the TPM's NV memory is full, creating a version fails with
 * KMS_EEXHAUSTED and a detail that says so (nothing half-made stays);
 * destroying a version frees its index for the next one. */
static void nv_full_is_a_clear_error(void **state)
{
    (void)state;
    kms_test_swtpm other;
    kms_test_swtpm_start(&other);
    kms_tpm2_config c = {.tcti = other.tcti, .lock_dir = other.dir};
    assert_int_equal(kms_tpm2_provision(&c), 0);
    kms_backend *s = NULL, *r = NULL;
    assert_int_equal(kms_tpm2_open(&c, &s, &r), 0);
    enum { MAX = 4000 };
    kms_backend_ref *refs = calloc(MAX, sizeof(*refs));
    assert_non_null(refs);
    int n = 0, rc = 0;
    while (n < MAX && (rc = s->ops->create_version(s, KEY_ID, (uint32_t)n + 1, &refs[n])) == 0)
        n++;
    print_message("swtpm: %d versions (NV indices) fit\n", n);
    assert_int_equal(rc, KMS_EEXHAUSTED);
    assert_true(n > 0);
    if (strstr(kms_error_detail(), "NV memory is full") == NULL)
        fail_msg("detail: %s", kms_error_detail());
    assert_int_equal(use_ref(s, &refs[0]), 0);
    assert_int_equal(s->ops->destroy_version(s, &refs[0]), 0);
    kms_backend_ref again;
    assert_int_equal(s->ops->create_version(s, KEY_ID, 9999, &again), 0);
    assert_int_equal(use_ref(s, &again), 0);
    assert_int_equal(use_ref(s, &refs[n - 1]), 0);
    free(refs);
    s->ops->close(s);
    r->ops->close(r);
    kms_test_swtpm_destroy(&other);
}

static size_t read_all(const char *path, uint8_t *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = fread(buf, 1, cap, f);
    assert_int_equal(fclose(f), 0);
    assert_true(n > 0 && n < cap);
    return n;
}

/* A sealed version made before shredding (reference format 1: no index,
 * empty authValue; made here with tpm2-tools as kms made it) stays
 * readable, and destroying it succeeds but shreds nothing: a copy of it
 * still opens (docs/tpm2.md says so). */
static void old_references_stay_readable_unshredded(void **state)
{
    (void)state;
    char args[4096], pub[600], priv[600];
    snprintf(pub, sizeof(pub), "%s/old.pub", T.dir);
    snprintf(priv, sizeof(priv), "%s/old.priv", T.dir);
    snprintf(args, sizeof(args), "getrandom 32 -o %s/old.key", T.dir);
    assert_int_equal(kms_test_swtpm_tool(&T, args), 0);
    snprintf(args, sizeof(args),
             "create -C 0x81000101 -g sha256 -i %s/old.key -u %s -r %s "
             "-a \"fixedtpm|fixedparent|noda|userwithauth\"",
             T.dir, pub, priv);
    assert_int_equal(kms_test_swtpm_tool(&T, args), 0);
    uint8_t p[1024], q[1024];
    size_t plen = read_all(pub, p, sizeof(p)), qlen = read_all(priv, q, sizeof(q));
    kms_backend_ref old;
    size_t n = 0;
    memcpy(old.bytes, "KT2\x01\x01", 5);
    n = 5;
    memcpy(old.bytes + n, KEY_ID, 16);
    n += 16;
    static const uint8_t version_and_mask[8] = {0, 0, 0, 90, 0, 0, 0, 0};
    memcpy(old.bytes + n, version_and_mask, 8);
    n += 8;
    old.bytes[n++] = (uint8_t)(plen >> 8);
    old.bytes[n++] = (uint8_t)plen;
    memcpy(old.bytes + n, p, plen);
    n += plen;
    old.bytes[n++] = (uint8_t)(qlen >> 8);
    old.bytes[n++] = (uint8_t)qlen;
    memcpy(old.bytes + n, q, qlen);
    n += qlen;
    old.len = n;
    assert_int_equal(use_ref(SEALED, &old), 0);
    kms_backend_ref copy = old;
    assert_int_equal(SEALED->ops->destroy_version(SEALED, &old), 0);
    assert_int_equal(use_ref(SEALED, &copy), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(other_mode_and_damaged_refs_refused),
        cmocka_unit_test(pcr_policy),
        cmocka_unit_test(pcr16_policy),
        cmocka_unit_test(resident_cache),
        cmocka_unit_test(concurrent_callers),
        cmocka_unit_test(stopped_tpm_keeps_open_sealed_keys),
        cmocka_unit_test(one_process_per_tpm),
        cmocka_unit_test(other_tpm_refuses),
        cmocka_unit_test(destroy_shreds_saved_copies),
        cmocka_unit_test(nv_full_is_a_clear_error),
        cmocka_unit_test(old_references_stay_readable_unshredded),
        cmocka_unit_test(replaced_primary_refused),
        cmocka_unit_test(bus_listener_learns_no_key),
        cmocka_unit_test(object_auth_needs_the_secret),
        cmocka_unit_test(state_key_on_the_tpm),
    };
    return KMS_RUN_GROUP(tests, group_setup, group_teardown);
}
