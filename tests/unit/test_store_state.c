/* State integrity in the SQLite store (docs/storage.md, "State
 * integrity"), on a real file, with a software HMAC-SHA-256 standing in
 * for the backend's state MAC (the integration test test_kmsd_state uses
 * the real token). Asserts: every write MACs its rows and moves the
 * generation on; usage reservations do not; a failed write changes
 * nothing; a changed row, a forged row, a deleted row and a row rolled back
 * to its older valid copy are each reported with table, row and check;
 * rows written without the MAC are refused until sealed (trust on first
 * use); the re-verification before a destroy refuses a changed version. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sqlite3.h>

#include "kmsd/store/store.h"
#include "test_util.h"

static const uint8_t test_key[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9};

static int soft_mac(void *ctx, const uint8_t *in, size_t len, uint8_t out[KMS_STATE_MAC_LEN])
{
    unsigned n = 0;
    int *calls = ctx;
    (*calls)++;
    if (HMAC(EVP_sha256(), test_key, sizeof(test_key), in, len, out, &n) == NULL || n != 32)
        return KMS_EINTERNAL;
    return KMS_OK;
}

struct fx {
    char dir[256];
    char db[300];
    kms_store *s;
    int calls;
    char failures[4096]; /* "table|row|check\n" per failure */
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    kms_test_tmpdir("kms-state", f->dir, sizeof(f->dir));
    kms_test_path(f->db, sizeof(f->db), f->dir, "kms.db");
    assert_int_equal(kms_store_sqlite_open(f->db, &f->s), KMS_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char path[320];
    const char *suffixes[] = {"", "-wal", "-shm"};
    if (f->s)
        f->s->ops->close(f->s);
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s%s", f->db, suffixes[i]);
        unlink(path);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

static void attach(struct fx *f)
{
    assert_int_equal(f->s->ops->state_attach(f->s, soft_mac, &f->calls, NULL), KMS_OK);
}

static void reopen_attached(struct fx *f)
{
    f->s->ops->close(f->s);
    assert_int_equal(kms_store_sqlite_open(f->db, &f->s), KMS_OK);
    attach(f);
}

static int collect(void *ctx, const char *table, const char *row, const char *check)
{
    struct fx *f = ctx;
    size_t used = strlen(f->failures);
    snprintf(f->failures + used, sizeof(f->failures) - used, "%s|%s|%s\n", table, row, check);
    return KMS_OK;
}

/* Verifies; the failure count, the lines in f->failures. */
static size_t verify(struct fx *f, uint64_t *generation)
{
    size_t n = 0;
    uint64_t g = 0;
    f->failures[0] = '\0';
    assert_int_equal(f->s->ops->state_verify(f->s, collect, f, &n, &g), KMS_OK);
    if (generation != NULL)
        *generation = g;
    return n;
}

static void raw(struct fx *f, const char *sql)
{
    sqlite3 *db = NULL;
    char *err = NULL;
    assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
        fail_msg("%s: %s", sql, err);
    sqlite3_close(db);
}

static const uint8_t key_id[KMS_KEY_ID_LEN] = {0xaa, 0xbb};

/* A key with one version, a policy, an officer and a threshold. */
static void populate(struct fx *f)
{
    kms_key_rec k = {0};
    memcpy(k.id, key_id, sizeof(k.id));
    snprintf(k.name, sizeof(k.name), "demo");
    snprintf(k.backend, sizeof(k.backend), "pkcs11");
    k.created_at = 1000;
    assert_int_equal(f->s->ops->key_create(f->s, &k), KMS_OK);
    kms_version_rec v = {0};
    memcpy(v.key_id, key_id, sizeof(v.key_id));
    v.version = 1;
    v.state = KMS_VERSION_ENABLED;
    v.created_at = 1000;
    v.ref.len = 4;
    memcpy(v.ref.bytes, "ref1", 4);
    assert_int_equal(f->s->ops->version_add(f->s, &v, 1), KMS_OK);
    kms_grant_rec g[] = {{KMS_ACTION_DECRYPT, "spiffe://kms.local/app"},
                         {KMS_ACTION_ENCRYPT, "spiffe://kms.local/app"}};
    assert_int_equal(f->s->ops->policy_set(f->s, key_id, g, 2), KMS_OK);
    kms_officer_rec o = {0};
    snprintf(o.id, sizeof(o.id), "officer1");
    snprintf(o.identity, sizeof(o.identity), "spiffe://kms.local/officer1");
    snprintf(o.signing_key_pem, sizeof(o.signing_key_pem), "PEM");
    assert_int_equal(f->s->ops->officer_add(f->s, &o), KMS_OK);
    assert_int_equal(f->s->ops->threshold_set(f->s, "RotateKey", 3), KMS_OK);
}

static void has_failure(struct fx *f, const char *table, const char *check)
{
    char want[128];
    snprintf(want, sizeof(want), "%s|", table);
    const char *at = strstr(f->failures, want);
    if (at == NULL || strstr(at, check) == NULL)
        fail_msg("want a %s failure \"%s\" in:\n%s", table, check, f->failures);
}

/* ---- tests ------------------------------------------------------------------------------- */

static void writes_are_sealed_and_move_the_generation(void **state)
{
    struct fx *f = *state;
    uint64_t g0 = 0, g1 = 0, g2 = 0, total = 0;
    attach(f);
    assert_int_equal(f->s->ops->state_seal_all(f->s), KMS_OK); /* the instance row */
    assert_int_equal(verify(f, &g0), 0);
    assert_true(g0 >= 1);
    populate(f);
    assert_int_equal(verify(f, &g1), 0);
    assert_int_equal(g1, g0 + 5); /* one per write */
    /* the data plane's counter is outside the MACs and the digest */
    int calls = f->calls;
    assert_int_equal(f->s->ops->usage_reserve(f->s, key_id, 1, 10, 100, &total), KMS_OK);
    assert_int_equal(f->calls, calls);
    assert_int_equal(verify(f, &g2), 0);
    assert_int_equal(g2, g1);
    /* a failed write changes nothing */
    kms_key_rec dup = {0};
    memcpy(dup.id, key_id, sizeof(dup.id));
    snprintf(dup.name, sizeof(dup.name), "demo");
    snprintf(dup.backend, sizeof(dup.backend), "pkcs11");
    assert_int_equal(f->s->ops->key_create(f->s, &dup), KMS_EEXISTS);
    assert_int_equal(verify(f, &g2), 0);
    assert_int_equal(g2, g1);
    /* and it all holds across a reopen */
    reopen_attached(f);
    assert_int_equal(verify(f, &g2), 0);
    assert_int_equal(g2, g1);
    assert_int_equal(f->s->ops->state_verify_key(f->s, key_id), KMS_OK);
}

static void changed_row_is_named(void **state)
{
    struct fx *f = *state;
    attach(f);
    assert_int_equal(f->s->ops->state_seal_all(f->s), KMS_OK);
    populate(f);
    f->s->ops->close(f->s);
    f->s = NULL;
    raw(f, "UPDATE keys SET deletion_at = 1");
    assert_int_equal(kms_store_sqlite_open(f->db, &f->s), KMS_OK);
    attach(f);
    assert_int_equal(verify(f, NULL), 1);
    has_failure(f, "keys", "aabb0000000000000000000000000000|row MAC does not verify");
    assert_int_equal(f->s->ops->state_verify_key(f->s, key_id), KMS_EAUTH);
}

static void forged_and_deleted_rows(void **state)
{
    struct fx *f = *state;
    attach(f);
    assert_int_equal(f->s->ops->state_seal_all(f->s), KMS_OK);
    populate(f);
    f->s->ops->close(f->s);
    f->s = NULL;
    raw(f, "INSERT INTO officers (id, identity, signing_key_pem, created_at)"
           " VALUES ('intruder', 'spiffe://kms.local/intruder', 'PEM', 0)");
    raw(f, "DELETE FROM key_policies WHERE action = 2");
    assert_int_equal(kms_store_sqlite_open(f->db, &f->s), KMS_OK);
    attach(f);
    assert_int_equal(verify(f, NULL), 2);
    has_failure(f, "officers", "id=intruder|row has no MAC");
    has_failure(f, "state_digest", "digest does not match the rows");
}

/* A version disabled, then its row put back with its older valid MAC. */
static void row_rolled_back_to_an_older_copy(void **state)
{
    struct fx *f = *state;
    attach(f);
    assert_int_equal(f->s->ops->state_seal_all(f->s), KMS_OK);
    populate(f);
    f->s->ops->close(f->s);
    f->s = NULL;
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT mac FROM key_versions", -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    uint8_t old_mac[32];
    memcpy(old_mac, sqlite3_column_blob(st, 0), 32);
    sqlite3_finalize(st);
    sqlite3_close(db);

    assert_int_equal(kms_store_sqlite_open(f->db, &f->s), KMS_OK);
    attach(f);
    assert_int_equal(f->s->ops->version_set_state(f->s, key_id, 1, KMS_VERSION_DISABLED), KMS_OK);
    assert_int_equal(verify(f, NULL), 0);
    f->s->ops->close(f->s);
    f->s = NULL;

    assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(
        sqlite3_prepare_v2(db, "UPDATE key_versions SET state = 1, mac = ?1", -1, &st, NULL),
        SQLITE_OK);
    sqlite3_bind_blob(st, 1, old_mac, 32, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    sqlite3_close(db);

    assert_int_equal(kms_store_sqlite_open(f->db, &f->s), KMS_OK);
    attach(f);
    assert_int_equal(verify(f, NULL), 1); /* the row itself verifies */
    has_failure(f, "state_digest", "digest does not match the rows");
    assert_int_equal(f->s->ops->state_verify_key(f->s, key_id), KMS_EAUTH);
}

/* Rows written before the key was attached are refused until sealed. */
static void unsealed_rows_until_trust_on_first_use(void **state)
{
    struct fx *f = *state;
    int sealed = 1;
    populate(f); /* not attached: no MACs, no digest */
    attach(f);
    assert_int_equal(f->s->ops->state_sealed(f->s, &sealed), KMS_OK);
    assert_int_equal(sealed, 0);
    assert_true(verify(f, NULL) >= 6);
    has_failure(f, "keys", "row has no MAC");
    has_failure(f, "state_digest", "missing");
    assert_int_equal(f->s->ops->state_seal_all(f->s), KMS_OK);
    assert_int_equal(f->s->ops->state_sealed(f->s, &sealed), KMS_OK);
    assert_int_equal(sealed, 1);
    assert_int_equal(verify(f, NULL), 0);
}

/* Without the MAC attached nothing is verified before a destroy (the
 * unauthenticated mode), and seal_all refuses. */
static void unattached_store(void **state)
{
    struct fx *f = *state;
    populate(f);
    assert_int_equal(f->s->ops->state_verify_key(f->s, key_id), KMS_OK);
    assert_int_equal(f->s->ops->state_seal_all(f->s), KMS_EPRECOND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(writes_are_sealed_and_move_the_generation, setup, teardown),
        cmocka_unit_test_setup_teardown(changed_row_is_named, setup, teardown),
        cmocka_unit_test_setup_teardown(forged_and_deleted_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(row_rolled_back_to_an_older_copy, setup, teardown),
        cmocka_unit_test_setup_teardown(unsealed_rows_until_trust_on_first_use, setup, teardown),
        cmocka_unit_test_setup_teardown(unattached_store, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
