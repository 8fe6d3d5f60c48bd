/* Backends as peers, no device: the one table of stored backend names
 * (both directions, every existing string), how the keyring registers
 * backend instances by (backend, mode) and owns the adopted ones, Health
 * over all of them, keys created on the instance their stored name names,
 * and the configuration's choice of backends (PKCS#11, TPM2, both, none)
 * as kmsd's table of kinds sees it. Fake backends count their calls. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "kmsd/backends.h"
#include "kmsd/config.h"
#include "kmsd/keyring/keyring.h"

/* ---- a fake backend with two modes ----------------------------------------------- */

struct fake {
    int down; /* health answers KMS_EUNAVAIL */
    int creates, healths, closes;
};

static int fake_create(kms_backend *b, const uint8_t key_id[KMS_KEY_ID_LEN], uint32_t version,
                       kms_backend_ref *ref)
{
    struct fake *f = b->impl;
    f->creates++;
    memcpy(ref->bytes, key_id, KMS_KEY_ID_LEN);
    memcpy(ref->bytes + KMS_KEY_ID_LEN, &version, sizeof(version));
    ref->len = KMS_KEY_ID_LEN + sizeof(version);
    return KMS_OK;
}

static int fake_open(kms_backend *b, const kms_backend_ref *ref, kms_backend_key **out)
{
    (void)b;
    (void)ref;
    (void)out;
    return KMS_ENOTFOUND;
}

static void fake_release(kms_backend *b, kms_backend_key *k)
{
    (void)b;
    (void)k;
}

static int fake_aead(kms_backend *b, kms_backend_key *k, kms_aead_io *io)
{
    (void)b;
    (void)k;
    (void)io;
    return KMS_EUNAVAIL;
}

static int fake_destroy(kms_backend *b, const kms_backend_ref *ref)
{
    (void)b;
    (void)ref;
    return KMS_OK;
}

static int fake_random(kms_backend *b, uint8_t *out, size_t n)
{
    (void)b;
    memset(out, 0x5a, n);
    return KMS_OK;
}

static int fake_health(kms_backend *b)
{
    struct fake *f = b->impl;
    f->healths++;
    return f->down ? KMS_EUNAVAIL : KMS_OK;
}

static void fake_close(kms_backend *b)
{
    struct fake *f = b->impl;
    f->closes++;
}

#define FAKE_OPS(ops_name, backend_name, mode_rows)                                                \
    static const kms_backend_ops ops_name = {                                                      \
        .name = backend_name,                                                                      \
        .modes = mode_rows,                                                                        \
        .n_modes = (mode_rows) == NULL ? 0 : 2,                                                    \
        .create_version = fake_create,                                                             \
        .open_version = fake_open,                                                                 \
        .release_version = fake_release,                                                           \
        .wrap = fake_aead,                                                                         \
        .unwrap = fake_aead,                                                                       \
        .destroy_version = fake_destroy,                                                           \
        .random = fake_random,                                                                     \
        .health = fake_health,                                                                     \
        .close = fake_close,                                                                       \
    }

/* Shaped like the TPM2 backend: its name and both its modes. */
static const kms_backend_mode tpm_like_modes[] = {
    {"sealed", 0},
    {"resident", KMS_BACKEND_CAP_KEY_NEVER_LEAVES},
};
FAKE_OPS(tpm_like_ops, "tpm2", tpm_like_modes);

/* A backend whose modes have no stored name. */
static const kms_backend_mode unknown_modes[] = {{"a", 0}, {"b", 0}};
FAKE_OPS(unknown_ops, "other", unknown_modes);

/* A test fake without modes. */
FAKE_OPS(modeless_ops, "fake", (const kms_backend_mode *)NULL);

/* ---- fixture: a keyring over a real SQLite file ------------------------------------ */

struct fx {
    char dir[256];
    char db[300];
    kms_store *store;
    kms_keyring *kr;
    struct fake sealed_dev, resident_dev, other_dev;
    kms_backend sealed, resident, other;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    const char *tmp = getenv("TMPDIR");
    snprintf(f->dir, sizeof(f->dir), "%s/kms-backends-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->db, sizeof(f->db), "%s/kms.db", f->dir);
    assert_int_equal(kms_store_sqlite_open(f->db, &f->store), KMS_OK);
    assert_int_equal(kms_keyring_open(f->store, NULL, &f->kr), KMS_OK);
    f->sealed = (kms_backend){.ops = &tpm_like_ops, .impl = &f->sealed_dev, .mode = 0};
    f->resident = (kms_backend){.ops = &tpm_like_ops, .impl = &f->resident_dev, .mode = 1};
    f->other = (kms_backend){.ops = &modeless_ops, .impl = &f->other_dev};
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    kms_keyring_close(f->kr);
    f->store->ops->close(f->store);
    char path[400];
    const char *suffixes[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s%s", f->db, suffixes[i]);
        unlink(path);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

/* ---- the stored-name table ----------------------------------------------------------- */

/* The strings existing databases hold, and the (backend, mode) each means. */
static const struct {
    const char *stored, *backend, *mode;
} known[] = {
    {"pkcs11", "pkcs11", ""},
    {"tpm2", "tpm2", "sealed"},
    {"tpm2-resident", "tpm2", "resident"},
};

static void stored_names_both_ways(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        const char *stored = NULL, *backend = NULL, *mode = NULL;
        assert_int_equal(kms_keyring_backend_name(known[i].backend, known[i].mode, &stored),
                         KMS_OK);
        assert_string_equal(stored, known[i].stored);
        kms_keyring_backend_of_name(known[i].stored, &backend, &mode);
        assert_string_equal(backend, known[i].backend);
        assert_string_equal(mode, known[i].mode);
    }
    /* A name without a row (a test fake's) is its own backend, mode "". */
    const char *backend = NULL, *mode = NULL;
    kms_keyring_backend_of_name("fake", &backend, &mode);
    assert_string_equal(backend, "fake");
    assert_string_equal(mode, "");
}

static void stored_names_negatives(void **state)
{
    (void)state;
    const char *stored = "untouched";
    /* No defaulting here: the quorum fills in a default mode first. */
    assert_int_equal(kms_keyring_backend_name("tpm2", "", &stored), KMS_EINVAL);
    assert_int_equal(kms_keyring_backend_name("pkcs11", "default", &stored), KMS_EINVAL);
    assert_int_equal(kms_keyring_backend_name("pkcs11", "sealed", &stored), KMS_EINVAL);
    assert_int_equal(kms_keyring_backend_name("tpm2-resident", "", &stored), KMS_EINVAL);
    assert_int_equal(kms_keyring_backend_name("tpm2", "Resident", &stored), KMS_EINVAL);
    assert_int_equal(kms_keyring_backend_name("", "", &stored), KMS_EINVAL);
    assert_non_null(strstr(kms_error_detail(), "unknown backend/mode"));
    assert_int_equal(kms_keyring_backend_name(NULL, "", &stored), KMS_EINVAL);
    assert_int_equal(kms_keyring_backend_name("tpm2", NULL, &stored), KMS_EINVAL);
    assert_string_equal(stored, "untouched");
}

/* ---- registration --------------------------------------------------------------------- */

static void instances_register_by_backend_and_mode(void **state)
{
    struct fx *f = *state;
    assert_int_equal(kms_keyring_add_backend(f->kr, &f->sealed), KMS_OK);
    assert_int_equal(kms_keyring_add_backend(f->kr, &f->resident), KMS_OK);
    assert_int_equal(kms_keyring_add_backend(f->kr, &f->other), KMS_OK);
    assert_true(kms_keyring_has_backend(f->kr, "tpm2"));
    assert_true(kms_keyring_has_backend(f->kr, "tpm2-resident"));
    assert_true(kms_keyring_has_backend(f->kr, "fake"));
    assert_false(kms_keyring_has_backend(f->kr, "pkcs11"));
    assert_false(kms_keyring_has_backend(f->kr, "resident"));
    assert_string_equal(kms_keyring_default_backend(f->kr), "tpm2");
    assert_string_equal(kms_backend_mode_of(&f->resident).name, "resident");
    assert_true(kms_backend_has_caps(&f->resident, KMS_BACKEND_CAP_KEY_NEVER_LEAVES));
    assert_false(kms_backend_has_caps(&f->sealed, KMS_BACKEND_CAP_KEY_NEVER_LEAVES));
    assert_string_equal(kms_backend_mode_of(&f->other).name, "");
    assert_false(kms_backend_has_caps(&f->other, KMS_BACKEND_CAP_SHRED));
}

static void registration_negatives(void **state)
{
    struct fx *f = *state;
    assert_null(kms_keyring_default_backend(f->kr));
    assert_int_equal(kms_keyring_add_backend(f->kr, &f->resident), KMS_OK);
    /* The same (backend, mode) twice. */
    kms_backend again = {.ops = &tpm_like_ops, .impl = &f->other_dev, .mode = 1};
    assert_int_equal(kms_keyring_add_backend(f->kr, &again), KMS_EEXISTS);
    /* A mode the backend does not have. */
    kms_backend beyond = {.ops = &tpm_like_ops, .impl = &f->other_dev, .mode = 2};
    assert_int_equal(kms_keyring_add_backend(f->kr, &beyond), KMS_EINVAL);
    /* Modes without a stored name. */
    kms_backend unknown = {.ops = &unknown_ops, .impl = &f->other_dev, .mode = 0};
    assert_int_equal(kms_keyring_add_backend(f->kr, &unknown), KMS_EINVAL);
    assert_int_equal(kms_keyring_add_backend(f->kr, NULL), KMS_EINVAL);
    assert_false(kms_keyring_has_backend(f->kr, "other"));
    assert_string_equal(kms_keyring_default_backend(f->kr), "tpm2-resident");
    assert_int_equal(f->other_dev.closes, 0); /* borrowed: never closed */
}

/* Adopted instances are closed once, with the keyring; an adoption that
 * fails closes the instance at once; borrowed ones are never closed. */
static void adopted_backends_close_with_the_keyring(void **state)
{
    struct fx *f = *state;
    assert_int_equal(kms_keyring_adopt_backend(f->kr, &f->sealed), KMS_OK);
    assert_int_equal(kms_keyring_adopt_backend(f->kr, &f->resident), KMS_OK);
    assert_int_equal(kms_keyring_add_backend(f->kr, &f->other), KMS_OK);
    kms_backend dup = {.ops = &tpm_like_ops, .impl = &f->other_dev, .mode = 0};
    assert_int_equal(kms_keyring_adopt_backend(f->kr, &dup), KMS_EEXISTS);
    assert_int_equal(f->other_dev.closes, 1);
    assert_int_equal(f->sealed_dev.closes, 0);
    kms_keyring_close(f->kr);
    assert_int_equal(kms_keyring_open(f->store, NULL, &f->kr), KMS_OK); /* for teardown */
    assert_int_equal(f->sealed_dev.closes, 1);
    assert_int_equal(f->resident_dev.closes, 1);
    assert_int_equal(f->other_dev.closes, 1);
}

/* ---- health --------------------------------------------------------------------------- */

static void health_asks_every_backend(void **state)
{
    struct fx *f = *state;
    assert_int_equal(kms_keyring_add_backend(f->kr, &f->sealed), KMS_OK);
    assert_int_equal(kms_keyring_add_backend(f->kr, &f->resident), KMS_OK);
    assert_int_equal(kms_keyring_add_backend(f->kr, &f->other), KMS_OK);
    assert_int_equal(kms_keyring_health(f->kr), KMS_OK);
    assert_int_equal(f->sealed_dev.healths, 1);
    assert_int_equal(f->resident_dev.healths, 1);
    assert_int_equal(f->other_dev.healths, 1);
    /* Any one down (first, middle, last): not healthy, and it is named. */
    struct fake *devs[] = {&f->sealed_dev, &f->resident_dev, &f->other_dev};
    const char *names[] = {"backend tpm2 ", "backend tpm2-resident ", "backend fake "};
    for (int i = 0; i < 3; i++) {
        devs[i]->down = 1;
        assert_int_equal(kms_keyring_health(f->kr), KMS_EUNAVAIL);
        assert_non_null(strstr(kms_error_detail(), names[i]));
        devs[i]->down = 0;
    }
    assert_int_equal(kms_keyring_health(f->kr), KMS_OK);
    /* Every one is asked even after one failed (each is logged, each may
     * reconnect). */
    f->sealed_dev.down = 1;
    int before = f->other_dev.healths;
    assert_int_equal(kms_keyring_health(f->kr), KMS_EUNAVAIL);
    assert_int_equal(f->other_dev.healths, before + 1);
}

/* ---- keys go to the instance their stored name names ------------------------------- */

static void keys_created_on_the_named_instance(void **state)
{
    struct fx *f = *state;
    assert_int_equal(kms_keyring_add_backend(f->kr, &f->sealed), KMS_OK);
    assert_int_equal(kms_keyring_add_backend(f->kr, &f->resident), KMS_OK);
    kms_key_rec rec;
    assert_int_equal(kms_keyring_create_key(f->kr, "in-resident", "tpm2-resident", &rec), KMS_OK);
    assert_string_equal(rec.backend, "tpm2-resident");
    assert_int_equal(f->resident_dev.creates, 1);
    assert_int_equal(f->sealed_dev.creates, 0);
    assert_int_equal(kms_keyring_create_key(f->kr, "in-sealed", "tpm2", &rec), KMS_OK);
    assert_string_equal(rec.backend, "tpm2");
    assert_int_equal(f->sealed_dev.creates, 1);
    kms_key_rec got;
    assert_int_equal(f->store->ops->key_get_by_name(f->store, "in-resident", &got), KMS_OK);
    assert_string_equal(got.backend, "tpm2-resident");
    /* Names that are not stored names of a registered instance. */
    assert_int_equal(kms_keyring_create_key(f->kr, "x", "resident", &rec), KMS_EINVAL);
    assert_int_equal(kms_keyring_create_key(f->kr, "x", "pkcs11", &rec), KMS_EINVAL);
    assert_int_equal(f->sealed_dev.creates + f->resident_dev.creates, 2);
}

/* ---- the configuration's choice of backends ------------------------------------------ */

static int load(kms_config *c, const char *yaml)
{
    return kms_config_load_buffer(c, yaml, strlen(yaml), ".");
}

static void config_chooses_backends(void **state)
{
    (void)state;
    static const struct {
        const char *yaml;
        int valid, configured;
        const char *detail;
    } cases[] = {
        {"database: d\npkcs11: {module: m, token_label: t, pin_file: p}\n", 1, 1, NULL},
        {"database: d\ntpm2: {tcti: \"swtpm:port=2321\"}\n", 1, 1, NULL},
        {"database: d\npkcs11: {module: m, token_label: t, pin_file: p}\n"
         "tpm2: {tcti: \"device:/dev/tpmrm0\"}\n",
         1, 1, NULL},
        {"database: d\n", 0, 0, "no backend configured"},
        {"database: d\ntpm2: {pcrs: \"16\"}\n", 0, 0, "no backend configured"},
        {"database: d\npkcs11: {module: m}\n", 0, 1, "must all be set"},
        {"database: d\npkcs11: {token_label: t, pin_file: p}\ntpm2: {tcti: \"x\"}\n", 0, 1,
         "must all be set"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kms_config c;
        assert_int_equal(kms_config_init(&c), KMS_OK);
        assert_int_equal(load(&c, cases[i].yaml), KMS_OK);
        int r = kms_config_validate(&c, KMS_CONFIG_INIT);
        if (cases[i].valid) {
            assert_int_equal(r, KMS_OK);
        } else {
            assert_int_equal(r, KMS_EINVAL);
            assert_non_null(strstr(kms_error_detail(), cases[i].detail));
        }
        assert_int_equal(kms_backends_configured(&c), cases[i].configured);
        kms_config_free(&c);
    }
}

/* kmsd's table opens nothing, and says why, when the configuration names
 * no backend; provisioning is a TPM2 step only. */
static void table_refuses_no_backend(void **state)
{
    (void)state;
    kms_config c;
    assert_int_equal(kms_config_init(&c), KMS_OK);
    assert_int_equal(load(&c, "database: d\n"), KMS_OK);
    kms_backend *out[KMS_BACKENDS_MAX];
    size_t n = 99;
    assert_int_equal(kms_backends_open(&c, 1, out, &n), KMS_EINVAL);
    assert_int_equal(n, 0);
    assert_non_null(strstr(kms_error_detail(), "no backend configured"));
    assert_int_equal(kms_backends_provision(&c, "tpm2"), KMS_EINVAL);
    assert_int_equal(kms_backends_provision(&c, "pkcs11"), KMS_EINVAL);
    assert_int_equal(kms_backends_provision(&c, "nope"), KMS_EINVAL);
    kms_config_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(stored_names_both_ways),
        cmocka_unit_test(stored_names_negatives),
        cmocka_unit_test_setup_teardown(instances_register_by_backend_and_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(registration_negatives, setup, teardown),
        cmocka_unit_test_setup_teardown(adopted_backends_close_with_the_keyring, setup, teardown),
        cmocka_unit_test_setup_teardown(health_asks_every_backend, setup, teardown),
        cmocka_unit_test_setup_teardown(keys_created_on_the_named_instance, setup, teardown),
        cmocka_unit_test(config_chooses_backends),
        cmocka_unit_test(table_refuses_no_backend),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
