#include "softhsm_fixture.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <ftw.h>
#include <p11-kit/pkcs11.h>
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

int kms_test_run(char *const argv[], char *out, size_t cap)
{
    int pipefd[2];
    if (pipe(pipefd) != 0)
        return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
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

int kms_test_token_create(kms_test_token *t, const char *label)
{
    memset(t, 0, sizeof(*t));
    t->module = getenv("KMS_SOFTHSM_MODULE");
    const char *util = getenv("KMS_SOFTHSM_UTIL");
    if (t->module == NULL || util == NULL)
        die("KMS_SOFTHSM_MODULE and KMS_SOFTHSM_UTIL must be set (run through ctest)");
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(t->dir, sizeof(t->dir), "%s/kms-hsm-XXXXXX", tmp);
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
    fclose(f);
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
    int fd = open(t->pin_file, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0 || write(fd, KMS_TEST_USER_PIN "\n", sizeof(KMS_TEST_USER_PIN)) < 0)
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
    return kms_test_run(argv, out, cap);
}

/* Opens the module in this process (the same instance the backend uses),
 * and a logged-in session on the token. */
static CK_FUNCTION_LIST_PTR module_session(const kms_test_token *t, CK_SLOT_ID *slot,
                                           CK_SESSION_HANDLE *s)
{
    void *dl = dlopen(t->module, RTLD_NOW | RTLD_NODELETE);
    if (dl == NULL)
        return NULL;
    CK_C_GetFunctionList get;
    void *sym = dlsym(dl, "C_GetFunctionList");
    memcpy(&get, &sym, sizeof(get));
    CK_FUNCTION_LIST_PTR f = NULL;
    if (get == NULL || get(&f) != CKR_OK)
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
            if (f->C_OpenSession(slots[i], CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, s) !=
                CKR_OK)
                return NULL;
            rv = f->C_Login(*s, CKU_USER, (CK_UTF8CHAR_PTR)KMS_TEST_USER_PIN,
                            strlen(KMS_TEST_USER_PIN));
            if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
                return NULL;
            return f;
        }
    }
    return NULL;
}

int kms_test_token_make_unsafe_key(const kms_test_token *t, const uint8_t key_id[16],
                                   uint32_t version, const char *which, uint8_t *ref,
                                   size_t *ref_len)
{
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
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE type = CKK_AES;
    CK_ULONG len = 32;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    int extractable = strcmp(which, "extractable") == 0;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_KEY_TYPE, &type, sizeof(type)},
        {CKA_VALUE_LEN, &len, sizeof(len)},
        {CKA_TOKEN, &yes, sizeof(yes)},
        {CKA_PRIVATE, &yes, sizeof(yes)},
        {CKA_SENSITIVE, extractable ? &yes : &no, sizeof(yes)},
        {CKA_EXTRACTABLE, extractable ? &yes : &no, sizeof(yes)},
        {CKA_ENCRYPT, &yes, sizeof(yes)},
        {CKA_DECRYPT, &yes, sizeof(yes)},
        {CKA_ID, id, sizeof(id)},
    };
    CK_MECHANISM mech = {CKM_AES_KEY_GEN, NULL, 0};
    CK_OBJECT_HANDLE h;
    CK_RV rv = f->C_GenerateKey(s, &mech, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), &h);
    f->C_CloseSession(s);
    if (rv != CKR_OK)
        return -1;
    memcpy(ref, id, sizeof(id));
    *ref_len = sizeof(id);
    return 0;
}

int kms_test_token_close_all_sessions(const kms_test_token *t)
{
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE s;
    CK_FUNCTION_LIST_PTR f = module_session(t, &slot, &s);
    if (f == NULL)
        return -1;
    return f->C_CloseAllSessions(slot) == CKR_OK ? 0 : -1;
}
