#include "softhsm_fixture.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <ftw.h>
#include "pkcs11/p11_pkcs11.h"
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static void die(const char *what)
{
    fprintf(stderr, "softhsm fixture: %s\n", what);
    abort();
}

static int run(char *const argv[], char *out, size_t cap, int with_stderr)
{
    int pipefd[2];
    /* O_CLOEXEC: children spawned by other threads must not hold the write
     * end (the read below would never see EOF); dup2 clears it on 1 and 2. */
    if (pipe2(pipefd, O_CLOEXEC) != 0)
        return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
    if (with_stderr)
        posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
    posix_spawn_file_actions_addclose(&fa, pipefd[0]);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pipefd[1]);
    if (rc != 0) {
        close(pipefd[0]);
        return -1;
    }
    size_t used = 0;
    char sink[4096];
    for (;;) {
        char *dst = out && used + 1 < cap ? out + used : sink;
        size_t room = out && used + 1 < cap ? cap - 1 - used : sizeof(sink);
        ssize_t n = read(pipefd[0], dst, room);
        if (n <= 0)
            break;
        if (dst != sink)
            used += (size_t)n;
    }
    close(pipefd[0]);
    if (out && cap)
        out[used] = '\0';
    int status;
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}

int kms_test_run(char *const argv[], char *out, size_t cap)
{
    return run(argv, out, cap, 1);
}

int kms_test_token_create(kms_test_token *t, const char *label)
{
    memset(t, 0, sizeof(*t));
    t->module = getenv("KMS_SOFTHSM_MODULE");
    const char *util = getenv("KMS_SOFTHSM_UTIL");
    if (t->module == NULL || util == NULL)
        die("KMS_SOFTHSM_MODULE and KMS_SOFTHSM_UTIL must be set (run through ctest)");
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || tmp[0] == '\0')
        tmp = "/tmp";
    int n = snprintf(t->dir, sizeof(t->dir), "%s/kms-hsm-XXXXXX", tmp);
    if (n < 0 || (size_t)n >= sizeof(t->dir))
        die("TMPDIR too long");
    if (mkdtemp(t->dir) == NULL)
        die("mkdtemp");
    char tokens[300];
    snprintf(tokens, sizeof(tokens), "%s/tokens", t->dir);
    if (mkdir(tokens, 0700) != 0)
        die("mkdir tokens");
    snprintf(t->conf, sizeof(t->conf), "%s/softhsm2.conf", t->dir);
    FILE *f = fopen(t->conf, "w");
    if (f == NULL)
        die("write softhsm2.conf");
    fprintf(f, "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens);
    if (fclose(f) != 0)
        die("write softhsm2.conf");
    setenv("SOFTHSM2_CONF", t->conf, 1);
    snprintf(t->label, sizeof(t->label), "%s", label);

    char *argv[] = {(char *)util, "--init-token",  "--free", "--label",         t->label,
                    "--so-pin",   KMS_TEST_SO_PIN, "--pin",  KMS_TEST_USER_PIN, NULL};
    char out[1024];
    if (kms_test_run(argv, out, sizeof(out)) != 0) {
        fprintf(stderr, "%s\n", out);
        die("softhsm2-util --init-token failed");
    }
    snprintf(t->pin_file, sizeof(t->pin_file), "%s/pin", t->dir);
    static const char pin_line[] = KMS_TEST_USER_PIN "\n";
    int fd = open(t->pin_file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        die("create pin file");
    if (write(fd, pin_line, sizeof(pin_line) - 1) != (ssize_t)(sizeof(pin_line) - 1))
        die("write pin file");
    close(fd);
    return 0;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void kms_test_token_destroy(kms_test_token *t)
{
    if (t->dir[0])
        nftw(t->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    t->dir[0] = '\0';
}

int kms_test_token_list_objects(const kms_test_token *t, char *out, size_t cap)
{
    const char *tool = getenv("KMS_PKCS11_TOOL");
    if (tool == NULL)
        die("KMS_PKCS11_TOOL must be set");
    char *argv[] = {(char *)tool,     "--module", (char *)t->module, "--token-label",
                    (char *)t->label, "--login",  "--pin",           KMS_TEST_USER_PIN,
                    "--list-objects", "--type",   "secrkey",         NULL};
    /* stdout only: pkcs11-tool warns on stderr when it cannot read a
     * sensitive CKA_VALUE, which would interleave with the listing. */
    return run(argv, out, cap, 0);
}

kms_p11_config kms_test_token_p11_config(const kms_test_token *t)
{
    return (kms_p11_config){
        .module_path = t->module, .token_label = t->label, .pin_file = t->pin_file, .sessions = 4};
}

CK_FUNCTION_LIST_PTR kms_test_token_functions(const kms_test_token *t, CK_SLOT_ID *slot)
{
    /* RTLD_NODELETE, never dlclose: this is the backend's instance. */
    void *dl = dlopen(t->module, RTLD_NOW | RTLD_NODELETE);
    if (dl == NULL)
        return NULL;
    CK_C_GetFunctionList get = NULL;
    void *sym = dlsym(dl, "C_GetFunctionList");
    memcpy(&get, &sym, sizeof(get));
    CK_FUNCTION_LIST_PTR f = NULL;
    if (get == NULL || get(&f) != CKR_OK || f == NULL)
        return NULL;
    CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
    CK_RV rv = f->C_Initialize(&args);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED)
        return NULL;
    CK_SLOT_ID slots[16];
    CK_ULONG n = 16;
    if (f->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
        return NULL;
    char want[32];
    memset(want, ' ', sizeof(want));
    memcpy(want, t->label, strlen(t->label));
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO ti;
        if (f->C_GetTokenInfo(slots[i], &ti) == CKR_OK && memcmp(ti.label, want, 32) == 0) {
            *slot = slots[i];
            return f;
        }
    }
    return NULL;
}

/* The module's function list and a logged-in RW session on the token. */
static CK_FUNCTION_LIST_PTR module_session(const kms_test_token *t, CK_SLOT_ID *slot,
                                           CK_SESSION_HANDLE *s)
{
    CK_FUNCTION_LIST_PTR f = kms_test_token_functions(t, slot);
    if (f == NULL)
        return NULL;
    if (f->C_OpenSession(*slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, s) != CKR_OK)
        return NULL;
    CK_RV rv =
        f->C_Login(*s, CKU_USER, (CK_UTF8CHAR_PTR)KMS_TEST_USER_PIN, strlen(KMS_TEST_USER_PIN));
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
        f->C_CloseSession(*s);
        return NULL;
    }
    return f;
}

int kms_test_token_make_key(const kms_test_token *t, const uint8_t key_id[16], uint32_t version,
                            const char *kind, uint8_t *ref, size_t *ref_len)
{
    int extractable = strcmp(kind, "extractable") == 0;
    int not_sensitive = strcmp(kind, "not-sensitive") == 0;
    int public = strcmp(kind, "public") == 0;
    int wrap = strcmp(kind, "wrap") == 0;
    int aes128 = strcmp(kind, "aes128") == 0;
    int imported = strcmp(kind, "imported") == 0;
    int modifiable = strcmp(kind, "modifiable") == 0;
    if (!(extractable || not_sensitive || public || wrap || aes128 || imported || modifiable ||
          strcmp(kind, "safe") == 0))
        return -1;

    CK_SLOT_ID slot;
    CK_SESSION_HANDLE s;
    CK_FUNCTION_LIST_PTR f = module_session(t, &slot, &s);
    if (f == NULL)
        return -1;
    uint8_t id[20];
    memcpy(id, key_id, 16);
    id[16] = (uint8_t)(version >> 24);
    id[17] = (uint8_t)(version >> 16);
    id[18] = (uint8_t)(version >> 8);
    id[19] = (uint8_t)version;
    char label[64];
    snprintf(label, sizeof(label), "kms-test:%s", kind);
    uint8_t value[32];
    memset(value, 0x42, sizeof(value)); /* "imported": known bytes, as an import would be */
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE type = CKK_AES;
    CK_ULONG len = aes128 ? 16 : 32;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_KEY_TYPE, &type, sizeof(type)},
        {CKA_TOKEN, &yes, sizeof(yes)},
        {CKA_PRIVATE, public ? &no : &yes, sizeof(yes)},
        {CKA_SENSITIVE, not_sensitive ? &no : &yes, sizeof(yes)},
        {CKA_EXTRACTABLE, extractable || not_sensitive ? &yes : &no, sizeof(yes)},
        {CKA_ENCRYPT, &yes, sizeof(yes)},
        {CKA_DECRYPT, &yes, sizeof(yes)},
        {CKA_WRAP, wrap ? &yes : &no, sizeof(yes)},
        {CKA_UNWRAP, wrap ? &yes : &no, sizeof(yes)},
        {CKA_MODIFIABLE, modifiable ? &yes : &no, sizeof(yes)},
        {CKA_ID, id, sizeof(id)},
        {CKA_LABEL, label, strlen(label)},
        /* last: CKA_VALUE_LEN to generate, CKA_VALUE to import */
        {CKA_VALUE_LEN, &len, sizeof(len)},
    };
    CK_ULONG count = sizeof(tmpl) / sizeof(tmpl[0]);
    CK_OBJECT_HANDLE h;
    CK_RV rv;
    if (imported) {
        tmpl[count - 1] = (CK_ATTRIBUTE){CKA_VALUE, value, sizeof(value)};
        rv = f->C_CreateObject(s, tmpl, count, &h);
    } else {
        CK_MECHANISM mech = {CKM_AES_KEY_GEN, NULL, 0};
        rv = f->C_GenerateKey(s, &mech, tmpl, count, &h);
    }
    f->C_CloseSession(s);
    if (rv != CKR_OK) {
        fprintf(stderr, "softhsm fixture: making a \"%s\" key: rv 0x%lx\n", kind, rv);
        return -1;
    }
    memcpy(ref, id, sizeof(id));
    *ref_len = sizeof(id);
    return 0;
}

int kms_test_token_make_unsafe_key(const kms_test_token *t, const uint8_t key_id[16],
                                   uint32_t version, const char *which, uint8_t *ref,
                                   size_t *ref_len)
{
    return kms_test_token_make_key(t, key_id, version, which, ref, ref_len);
}

int kms_test_token_close_all_sessions(const kms_test_token *t)
{
    CK_SLOT_ID slot;
    CK_FUNCTION_LIST_PTR f = kms_test_token_functions(t, &slot);
    if (f == NULL)
        return -1;
    return f->C_CloseAllSessions(slot) == CKR_OK ? 0 : -1;
}
