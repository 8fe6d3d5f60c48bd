/* The quorum action table (kmsd/quorum/quorum_actions.h) over a real
 * SQLite file in a temp dir (TMPDIR) and an in-memory backend named
 * "pkcs11" that holds nothing secret (no action here wraps data).
 *
 * For each action: a valid body passes validation (with its defaults
 * filled in), each invalid field is refused with its KMS_E code and the
 * database is unchanged, byte for byte; executing it makes exactly its
 * change, records its plan first where it has one, and running it again
 * from that plan (as after a crash) changes nothing more. A case with no
 * row fails closed: refused by decode, validate and execute, and an
 * EXECUTING action of that case ends FAILED with nothing changed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <sqlite3.h>

#include "kmsd/keyring/keyring.h"
#include "kmsd/policy/policy.h"
#include "kmsd/quorum/quorum.h"
#include "kmsd/quorum/quorum_actions.h"
#include "kmsd/store/store.h"

#define NOW 1700000000
#define DAY 86400

/* ---- an in-memory backend ------------------------------------------------------------- */

#define FAKE_MAX 32

struct fake {
    uint8_t ids[FAKE_MAX][20];
    int used[FAKE_MAX];
    int creates;
    /* destroy_version of the object with this id fails (KMS_EUNAVAIL) */
    uint8_t fail_destroy[20];
    int fail_destroy_set;
};

struct kms_backend_key {
    int slot;
};

static int fake_slot(struct fake *f, const uint8_t *id, size_t len)
{
    for (int i = 0; i < FAKE_MAX; i++)
        if (f->used[i] && len == 20 && memcmp(f->ids[i], id, 20) == 0)
            return i;
    return -1;
}

static int fake_create(kms_backend *b, const uint8_t key_id[KMS_KEY_ID_LEN], uint32_t version,
                       kms_backend_ref *ref)
{
    struct fake *f = b->impl;
    uint8_t id[20];
    memcpy(id, key_id, 16);
    for (int i = 0; i < 4; i++)
        id[16 + i] = (uint8_t)(version >> (24 - 8 * i));
    memcpy(ref->bytes, id, 20);
    ref->len = 20;
    if (fake_slot(f, id, 20) >= 0)
        return KMS_EEXISTS;
    for (int i = 0; i < FAKE_MAX; i++)
        if (!f->used[i]) {
            f->used[i] = 1;
            memcpy(f->ids[i], id, 20);
            f->creates++;
            return KMS_OK;
        }
    return KMS_EEXHAUSTED;
}

static int fake_open(kms_backend *b, const kms_backend_ref *ref, kms_backend_key **out)
{
    int slot = fake_slot(b->impl, ref->bytes, ref->len);
    if (slot < 0)
        return KMS_ENOTFOUND;
    if ((*out = malloc(sizeof(**out))) == NULL)
        return KMS_ENOMEM;
    (*out)->slot = slot;
    return KMS_OK;
}

static void fake_release(kms_backend *b, kms_backend_key *k)
{
    (void)b;
    free(k);
}

static int fake_aead(kms_backend *b, kms_backend_key *k, kms_aead_io *io)
{
    (void)b;
    (void)k;
    (void)io;
    return KMS_EUNAVAIL; /* no action wraps data */
}

static int fake_destroy(kms_backend *b, const kms_backend_ref *ref)
{
    struct fake *f = b->impl;
    if (f->fail_destroy_set && ref->len == 20 && memcmp(ref->bytes, f->fail_destroy, 20) == 0)
        return kms_error_set(KMS_EUNAVAIL, "fake: the device refused to destroy it");
    int slot = fake_slot(f, ref->bytes, ref->len);
    if (slot < 0)
        return KMS_ENOTFOUND;
    f->used[slot] = 0;
    return KMS_OK;
}

static int fake_random(kms_backend *b, uint8_t *out, size_t n)
{
    (void)b;
    return RAND_bytes(out, (int)n) == 1 ? KMS_OK : KMS_EUNAVAIL;
}

static int fake_health(kms_backend *b)
{
    (void)b;
    return KMS_OK;
}

static void fake_close(kms_backend *b)
{
    (void)b;
}

static const kms_backend_ops fake_ops = {
    .name = "pkcs11", /* the default backend of CreateKey */
    .create_version = fake_create,
    .open_version = fake_open,
    .release_version = fake_release,
    .wrap = fake_aead,
    .unwrap = fake_aead,
    .destroy_version = fake_destroy,
    .random = fake_random,
    .health = fake_health,
    .close = fake_close,
};

/* ---- fixture --------------------------------------------------------------------------- */

struct fx {
    char dir[256];
    char db[300];
    struct fake fake;
    kms_backend backend;
    kms_store *store;
    kms_keyring *kr;
    kms_policy *policy;
    kms_action_env env;
    char pem[KMS_SIGNING_KEY_PEM_MAX + 1]; /* a P-256 public key nobody enrolled */
};

static void public_pem(const char *alg, const char *param, char *out, size_t cap)
{
    EVP_PKEY *k =
        param ? EVP_PKEY_Q_keygen(NULL, NULL, alg, param) : EVP_PKEY_Q_keygen(NULL, NULL, alg);
    BIO *mem = BIO_new(BIO_s_mem());
    char *data = NULL;
    assert_non_null(k);
    assert_int_equal(PEM_write_bio_PUBKEY(mem, k), 1);
    long n = BIO_get_mem_data(mem, &data);
    assert_true(n > 0 && (size_t)n < cap);
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    BIO_free(mem);
    EVP_PKEY_free(k);
}

static void add_officer(struct fx *f, const char *id, const char *identity)
{
    kms_officer_rec o;
    memset(&o, 0, sizeof(o));
    snprintf(o.id, sizeof(o.id), "%s", id);
    snprintf(o.identity, sizeof(o.identity), "%s", identity);
    public_pem("EC", "P-256", o.signing_key_pem, sizeof(o.signing_key_pem));
    o.created_at = NOW;
    assert_int_equal(f->store->ops->officer_add(f->store, &o), KMS_OK);
}

/* Three officers, every threshold 2, key k1 (version 1) on "pkcs11". */
static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    const char *tmp = getenv("TMPDIR");
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "%s/kms-quorum-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->db, sizeof(f->db), "%s/kms.db", f->dir);
    f->backend.ops = &fake_ops;
    f->backend.impl = &f->fake;
    assert_int_equal(kms_store_sqlite_open(f->db, &f->store), KMS_OK);
    assert_int_equal(kms_keyring_open(f->store, NULL, &f->kr), KMS_OK);
    assert_int_equal(kms_keyring_add_backend(f->kr, &f->backend), KMS_OK);
    add_officer(f, "o1", "spiffe://test/o1");
    add_officer(f, "o2", "spiffe://test/o2");
    add_officer(f, "o3", "spiffe://test/o3");
    for (size_t i = 0; i < kms_quorum_n_actions; i++)
        assert_int_equal(f->store->ops->threshold_set(f->store, kms_quorum_actions[i].type, 2),
                         KMS_OK);
    assert_int_equal(kms_policy_open(f->store, &f->policy), KMS_OK);
    kms_key_rec rec;
    assert_int_equal(kms_keyring_create_key(f->kr, "k1", "pkcs11", &rec), KMS_OK);
    public_pem("EC", "P-256", f->pem, sizeof(f->pem));
    f->env = (kms_action_env){f->store, f->kr, f->policy, NOW};
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    kms_policy_close(f->policy);
    kms_keyring_close(f->kr);
    f->store->ops->close(f->store);
    const char *suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (int i = 0; i < 4; i++) {
        char path[320];
        snprintf(path, sizeof(path), "%s%s", f->db, suffixes[i]);
        unlink(path);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

/* Every row of every table of the database as one string (malloc'd), read
 * through a second connection: what "nothing stored" is compared with. */
static char *dump(struct fx *f)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *tables = NULL;
    size_t cap = 1 << 16, len = 0;
    char *out = calloc(1, cap);
    assert_non_null(out);
    assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT name FROM sqlite_master WHERE type = 'table'"
                                        " ORDER BY name",
                                        -1, &tables, NULL),
                     SQLITE_OK);
    while (sqlite3_step(tables) == SQLITE_ROW) {
        char sql[256];
        sqlite3_stmt *rows = NULL;
        snprintf(sql, sizeof(sql), "SELECT * FROM \"%s\" ORDER BY 1",
                 (const char *)sqlite3_column_text(tables, 0));
        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &rows, NULL), SQLITE_OK);
        while (sqlite3_step(rows) == SQLITE_ROW) {
            for (int c = 0; c < sqlite3_column_count(rows); c++) {
                const unsigned char *v = sqlite3_column_blob(rows, c);
                size_t n = (size_t)sqlite3_column_bytes(rows, c);
                while (len + 2 * n + 8 > cap) {
                    cap *= 2;
                    assert_non_null(out = realloc(out, cap));
                }
                for (size_t i = 0; i < n; i++)
                    len += (size_t)snprintf(out + len, cap - len, "%02x", v[i]);
                len += (size_t)snprintf(out + len, cap - len, "|");
            }
            out[len++] = '\n';
        }
        sqlite3_finalize(rows);
    }
    sqlite3_finalize(tables);
    sqlite3_close(db);
    out[len] = '\0';
    return out;
}

/* body encoded and decoded again: heap strings that validate may replace. */
static Kms__V1__ActionBody *decoded(const Kms__V1__ActionBody *body)
{
    size_t n = protobuf_c_message_get_packed_size(&body->base);
    uint8_t *bytes = malloc(n ? n : 1);
    Kms__V1__ActionBody *b = NULL;
    assert_non_null(bytes);
    protobuf_c_message_pack(&body->base, bytes);
    assert_int_equal(kms_quorum_action_decode(bytes, n, 0, &b), KMS_OK);
    free(bytes);
    return b;
}

static void body_free(Kms__V1__ActionBody *b)
{
    protobuf_c_message_free_unpacked(&b->base, NULL);
}

/* Validation refuses body with code and the database does not change. */
static void refused(struct fx *f, const Kms__V1__ActionBody *body, int code)
{
    char *before = dump(f);
    Kms__V1__ActionBody *b = decoded(body);
    assert_int_equal(kms_quorum_action_validate(&f->env, b), code);
    body_free(b);
    char *after = dump(f);
    assert_string_equal(before, after);
    free(before);
    free(after);
}

/* Validation accepts body (the decoded, validated body is returned). */
static Kms__V1__ActionBody *accepted(struct fx *f, const Kms__V1__ActionBody *body)
{
    char *before = dump(f);
    Kms__V1__ActionBody *b = decoded(body);
    assert_int_equal(kms_quorum_action_validate(&f->env, b), KMS_OK);
    char *after = dump(f);
    assert_string_equal(before, after); /* validation never writes */
    free(before);
    free(after);
    return b;
}

static kms_key_rec key(struct fx *f, const char *name)
{
    kms_key_rec rec;
    assert_int_equal(f->store->ops->key_get_by_name(f->store, name, &rec), KMS_OK);
    return rec;
}

/* *a as stored now (action_get clears its output before reading the id). */
static void reread(struct fx *f, kms_action_rec *a)
{
    uint8_t id[KMS_ACTION_ID_LEN];
    memcpy(id, a->id, sizeof(id));
    assert_int_equal(f->store->ops->action_get(f->store, id, a), KMS_OK);
}

/* Stores b as an action and approves it by o1 and o2: EXECUTING. */
static kms_action_rec *executing(struct fx *f, const Kms__V1__ActionBody *b)
{
    kms_action_rec *a = calloc(1, sizeof(*a));
    assert_non_null(a);
    assert_int_equal(RAND_bytes(a->id, sizeof(a->id)), 1);
    a->bytes_len = protobuf_c_message_get_packed_size(&b->base);
    assert_true(a->bytes_len > 0 && a->bytes_len <= sizeof(a->bytes));
    protobuf_c_message_pack(&b->base, a->bytes);
    const kms_quorum_action *row = kms_quorum_action_of(b);
    snprintf(a->type, sizeof(a->type), "%s", row ? row->type : "Unknown");
    snprintf(a->proposer, sizeof(a->proposer), "o1");
    a->state = KMS_ACTION_PENDING;
    a->threshold = 2;
    a->created_at = NOW;
    a->expires_at = NOW + DAY;
    assert_int_equal(f->store->ops->action_create(f->store, a), KMS_OK);
    int reached = 0;
    const uint8_t sig[1] = {0};
    assert_int_equal(f->store->ops->action_approve(f->store, a->id, "o1", sig, 1, NOW, &reached),
                     KMS_OK);
    assert_int_equal(f->store->ops->action_approve(f->store, a->id, "o2", sig, 1, NOW, &reached),
                     KMS_OK);
    assert_int_equal(reached, 1);
    reread(f, a);
    assert_int_equal(a->state, KMS_ACTION_EXECUTING);
    return a;
}

/* Executes b as a new EXECUTING action; the result line goes to res. */
static kms_action_rec *executed(struct fx *f, const Kms__V1__ActionBody *b, char *res, size_t cap)
{
    kms_action_rec *a = executing(f, b);
    assert_int_equal(kms_quorum_action_execute(&f->env, a, b, res, cap), KMS_OK);
    return a;
}

/* Runs a again from its stored plan, as kmsd does after a crash. */
static void run_again(struct fx *f, kms_action_rec *a, const Kms__V1__ActionBody *b)
{
    char res[KMS_ACTION_RESULT_MAX + 1];
    reread(f, a);
    assert_true(a->plan_len > 0);
    assert_int_equal(kms_quorum_action_execute(&f->env, a, b, res, sizeof(res)), KMS_OK);
}

static void assert_plan(struct fx *f, const kms_action_rec *a, const uint8_t *plan, size_t len)
{
    kms_action_rec *stored = calloc(1, sizeof(*stored));
    assert_non_null(stored);
    assert_int_equal(f->store->ops->action_get(f->store, a->id, stored), KMS_OK);
    assert_int_equal(stored->plan_len, len);
    if (len > 0)
        assert_memory_equal(stored->plan, plan, len);
    free(stored);
}

struct grants {
    char list[1024];
};

static int collect_grant(void *ctx, const kms_grant_rec *g)
{
    struct grants *gs = ctx;
    size_t n = strlen(gs->list);
    snprintf(gs->list + n, sizeof(gs->list) - n, "%d:%s ", (int)g->action, g->identity);
    return 0;
}

static const char *grants_of(struct fx *f, const char *name, struct grants *gs)
{
    kms_key_rec rec = key(f, name);
    gs->list[0] = '\0';
    assert_int_equal(f->store->ops->policy_list(f->store, rec.id, collect_grant, gs), KMS_OK);
    return gs->list;
}

static int has_officer_cb(void *ctx, const kms_officer_rec *o)
{
    const char **id = ctx;
    if (*id != NULL && strcmp(o->id, *id) == 0)
        *id = NULL;
    return 0;
}

static int has_officer(struct fx *f, const char *id)
{
    const char *want = id;
    assert_int_equal(f->store->ops->officer_list(f->store, has_officer_cb, &want), KMS_OK);
    return want == NULL;
}

/* ---- the table ------------------------------------------------------------------------- */

/* One row per member of the ActionBody oneof, its type the member's
 * message name, every function present, types distinct. */
static void table_matches_the_proto(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *d = &kms__v1__action_body__descriptor;
    assert_int_equal(kms_quorum_n_actions, d->n_fields);
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *fd = &d->fields[i];
        Kms__V1__ActionBody b = KMS__V1__ACTION_BODY__INIT;
        b.action_case = (Kms__V1__ActionBody__ActionCase)fd->id;
        const kms_quorum_action *row = kms_quorum_action_of(&b);
        assert_non_null(row);
        assert_string_equal(row->type,
                            ((const ProtobufCMessageDescriptor *)fd->descriptor)->short_name);
        assert_ptr_equal(kms_quorum_action_by_type(row->type), row);
        assert_non_null(row->validate);
        assert_non_null(row->execute);
    }
    Kms__V1__ActionBody none = KMS__V1__ACTION_BODY__INIT;
    assert_null(kms_quorum_action_of(&none));
    assert_null(kms_quorum_action_by_type("rotate_key"));
    assert_null(kms_quorum_action_by_type(""));
}

static void officer_ids(void **state)
{
    (void)state;
    assert_true(kms_quorum_valid_officer_id("alice"));
    assert_true(kms_quorum_valid_officer_id("a.b_c-9"));
    assert_false(kms_quorum_valid_officer_id(""));
    assert_false(kms_quorum_valid_officer_id(KMS_SYSTEM_PROPOSER));
    assert_false(kms_quorum_valid_officer_id("a b"));
    assert_false(kms_quorum_valid_officer_id("a/b"));
    char long_id[KMS_OFFICER_ID_MAX + 2];
    memset(long_id, 'a', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    assert_false(kms_quorum_valid_officer_id(long_id));
    long_id[KMS_OFFICER_ID_MAX] = '\0';
    assert_true(kms_quorum_valid_officer_id(long_id));
}

/* ---- decoding -------------------------------------------------------------------------- */

static void decode_refuses_what_no_row_knows(void **state)
{
    (void)state;
    Kms__V1__ActionBody *b = NULL;
    /* Field 99 (varint 1): not a member of the oneof. */
    const uint8_t unknown_case[] = {0x98, 0x06, 0x01};
    assert_int_equal(kms_quorum_action_decode(unknown_case, sizeof(unknown_case), 0, &b),
                     KMS_EINVAL);
    /* RotateKey {key_name "k1", field 15 = 1}: unknown field one level down. */
    const uint8_t nested[] = {0x12, 0x06, 0x0a, 0x02, 'k', '1', 0x78, 0x01};
    assert_int_equal(kms_quorum_action_decode(nested, sizeof(nested), 0, &b), KMS_EINVAL);
    /* CreateKey {key_name "k", policy {field 9 = 1}}: two levels down. */
    const uint8_t deeper[] = {0x0a, 0x07, 0x0a, 0x01, 'k', 0x22, 0x02, 0x48, 0x01};
    assert_int_equal(kms_quorum_action_decode(deeper, sizeof(deeper), 0, &b), KMS_EINVAL);
    /* Nothing set, garbage, empty, too large. */
    const uint8_t empty_rotate[] = {0x12, 0x00};
    assert_int_equal(kms_quorum_action_decode((const uint8_t *)"", 0, 0, &b), KMS_EINVAL);
    const uint8_t garbage[] = {0xff, 0xff, 0xff};
    assert_int_equal(kms_quorum_action_decode(garbage, sizeof(garbage), 0, &b), KMS_EINVAL);
    static uint8_t big[KMS_ACTION_BYTES_MAX + 1];
    assert_int_equal(kms_quorum_action_decode(big, sizeof(big), 0, &b), KMS_EINVAL);
    /* A well-formed RotateKey decodes. */
    assert_int_equal(kms_quorum_action_decode(empty_rotate, sizeof(empty_rotate), 1, &b), KMS_OK);
    assert_int_equal(b->action_case, KMS__V1__ACTION_BODY__ACTION_ROTATE_KEY);
    body_free(b);
}

/* Stored actions must be kmsd's own encoding; proposals need not be. */
static void decode_canonical(void **state)
{
    (void)state;
    Kms__V1__ActionBody *b = NULL;
    /* RotateKey {key_name "k1"}, its length as a two-byte varint. */
    const uint8_t long_len[] = {0x12, 0x84, 0x00, 0x0a, 0x02, 'k', '1'};
    assert_int_equal(kms_quorum_action_decode(long_len, sizeof(long_len), 1, &b), KMS_EINVAL);
    assert_int_equal(kms_quorum_action_decode(long_len, sizeof(long_len), 0, &b), KMS_OK);
    assert_string_equal(b->rotate_key->key_name, "k1");
    body_free(b);
    const uint8_t canonical[] = {0x12, 0x04, 0x0a, 0x02, 'k', '1'};
    assert_int_equal(kms_quorum_action_decode(canonical, sizeof(canonical), 1, &b), KMS_OK);
    body_free(b);
}

/* ---- validation ------------------------------------------------------------------------ */

static void validate_create_key(void **state)
{
    struct fx *f = *state;
    char *enc[] = {"spiffe://app/b", "spiffe://app/a"};
    char *dup[] = {"spiffe://app/a", "spiffe://app/a"};
    char *officer[] = {"spiffe://test/o2"};
    char *empty[] = {""};
    Kms__V1__KeyPolicy pol = KMS__V1__KEY_POLICY__INIT;
    Kms__V1__RotationPolicy rot = KMS__V1__ROTATION_POLICY__INIT;
    Kms__V1__CreateKey c = KMS__V1__CREATE_KEY__INIT;
    Kms__V1__ActionBody body = KMS__V1__ACTION_BODY__INIT;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_CREATE_KEY;
    body.create_key = &c;
    c.key_name = "k2";
    c.policy = &pol;
    c.rotation = &rot;
    pol.encrypt = enc;
    pol.n_encrypt = 2;
    rot.rotation_period_days = 90;

    Kms__V1__ActionBody *b = accepted(f, &body);
    assert_string_equal(b->create_key->backend, "pkcs11"); /* default filled in */
    assert_string_equal(b->create_key->backend_mode, "");
    assert_string_equal(b->create_key->policy->encrypt[0], "spiffe://app/a"); /* sorted */
    body_free(b);

    c.key_name = "bad name";
    refused(f, &body, KMS_EINVAL);
    c.key_name = "k1";
    refused(f, &body, KMS_EEXISTS);
    c.key_name = "k2";
    c.backend = "hsm";
    refused(f, &body, KMS_EINVAL);
    c.backend = "pkcs11";
    c.backend_mode = "resident";
    refused(f, &body, KMS_EINVAL);
    c.backend = "tpm2"; /* a known backend this kmsd has not configured */
    c.backend_mode = "";
    refused(f, &body, KMS_EPRECOND);
    c.backend = "";
    rot.rotation_period_days = 36501;
    refused(f, &body, KMS_EINVAL);
    rot.rotation_period_days = 36500;
    pol.encrypt = dup;
    refused(f, &body, KMS_EINVAL);
    pol.encrypt = officer;
    pol.n_encrypt = 1;
    refused(f, &body, KMS_EINVAL);
    pol.encrypt = empty;
    refused(f, &body, KMS_EINVAL);
    pol.n_encrypt = 0;
    pol.reencrypt = officer;
    pol.n_reencrypt = 1;
    refused(f, &body, KMS_EINVAL);
}

static void schedule_deletion_of(struct fx *f, const char *name, int64_t at)
{
    kms_key_rec rec = key(f, name);
    assert_int_equal(f->store->ops->key_set_deletion(f->store, rec.id, at), KMS_OK);
}

static void validate_key_actions(void **state)
{
    struct fx *f = *state;
    Kms__V1__RotateKey rk = KMS__V1__ROTATE_KEY__INIT;
    Kms__V1__ActionBody body = KMS__V1__ACTION_BODY__INIT;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_ROTATE_KEY;
    body.rotate_key = &rk;
    rk.key_name = "k1";
    body_free(accepted(f, &body));
    rk.key_name = "no/such";
    refused(f, &body, KMS_ENOTFOUND);
    rk.key_name = "";
    refused(f, &body, KMS_EINVAL);

    /* SetMinDecryptionVersion: 1..primary. */
    Kms__V1__SetMinDecryptionVersion smv = KMS__V1__SET_MIN_DECRYPTION_VERSION__INIT;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_SET_MIN_DECRYPTION_VERSION;
    body.set_min_decryption_version = &smv;
    smv.key_name = "k1";
    smv.version = 1;
    body_free(accepted(f, &body));
    smv.version = 0;
    refused(f, &body, KMS_EINVAL);
    smv.version = 2;
    refused(f, &body, KMS_EINVAL);
    smv.key_name = "no/such";
    smv.version = 1;
    refused(f, &body, KMS_ENOTFOUND);

    /* ScheduleKeyDeletion: 0 means 30; 7..30. */
    Kms__V1__ScheduleKeyDeletion sd = KMS__V1__SCHEDULE_KEY_DELETION__INIT;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_SCHEDULE_KEY_DELETION;
    body.schedule_key_deletion = &sd;
    sd.key_name = "k1";
    Kms__V1__ActionBody *b = accepted(f, &body);
    assert_int_equal(b->schedule_key_deletion->pending_window_days, 30);
    body_free(b);
    sd.pending_window_days = 7;
    body_free(accepted(f, &body));
    sd.pending_window_days = 6;
    refused(f, &body, KMS_EINVAL);
    sd.pending_window_days = 31;
    refused(f, &body, KMS_EINVAL);

    /* SetRotationPolicy: at most 36500 days. */
    Kms__V1__RotationPolicy rot = KMS__V1__ROTATION_POLICY__INIT;
    Kms__V1__SetRotationPolicy sr = KMS__V1__SET_ROTATION_POLICY__INIT;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_SET_ROTATION_POLICY;
    body.set_rotation_policy = &sr;
    sr.key_name = "k1";
    sr.rotation = &rot;
    rot.rotation_period_days = 36500;
    body_free(accepted(f, &body));
    rot.rotation_period_days = 36501;
    refused(f, &body, KMS_EINVAL);
    sr.rotation = NULL; /* never */
    body_free(accepted(f, &body));

    /* UpdateKeyPolicy: sorted, no officer, no duplicate. */
    char *ids[] = {"spiffe://app/z", "spiffe://app/y"};
    char *officer[] = {"spiffe://test/o1"};
    Kms__V1__KeyPolicy pol = KMS__V1__KEY_POLICY__INIT;
    Kms__V1__UpdateKeyPolicy up = KMS__V1__UPDATE_KEY_POLICY__INIT;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_UPDATE_KEY_POLICY;
    body.update_key_policy = &up;
    up.key_name = "k1";
    up.policy = &pol;
    pol.decrypt = ids;
    pol.n_decrypt = 2;
    b = accepted(f, &body);
    assert_string_equal(b->update_key_policy->policy->decrypt[0], "spiffe://app/y");
    body_free(b);
    pol.encrypt = officer;
    pol.n_encrypt = 1;
    refused(f, &body, KMS_EINVAL);
    up.key_name = "no/such";
    pol.n_encrypt = 0;
    refused(f, &body, KMS_ENOTFOUND);

    /* A key scheduled for deletion takes no action but its cancellation. */
    schedule_deletion_of(f, "k1", NOW + DAY);
    rk.key_name = "k1";
    body.action_case = KMS__V1__ACTION_BODY__ACTION_ROTATE_KEY;
    body.rotate_key = &rk;
    refused(f, &body, KMS_EPRECOND);
    up.key_name = "k1";
    body.action_case = KMS__V1__ACTION_BODY__ACTION_UPDATE_KEY_POLICY;
    body.update_key_policy = &up;
    refused(f, &body, KMS_EPRECOND);

    /* CancelKeyDeletion: only while scheduled and not yet due. */
    Kms__V1__CancelKeyDeletion cd = KMS__V1__CANCEL_KEY_DELETION__INIT;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_CANCEL_KEY_DELETION;
    body.cancel_key_deletion = &cd;
    cd.key_name = "k1";
    body_free(accepted(f, &body));
    schedule_deletion_of(f, "k1", NOW);
    refused(f, &body, KMS_EPRECOND); /* due: destroyed, or about to be */
    schedule_deletion_of(f, "k1", 0);
    refused(f, &body, KMS_EPRECOND); /* not scheduled */
    cd.key_name = "no/such";
    refused(f, &body, KMS_ENOTFOUND);
}

static void validate_version_state(void **state)
{
    struct fx *f = *state;
    uint32_t v = 0;
    assert_int_equal(kms_keyring_rotate(f->kr, "k1", &v), KMS_OK);
    assert_int_equal(v, 2);
    Kms__V1__SetKeyVersionState s = KMS__V1__SET_KEY_VERSION_STATE__INIT;
    Kms__V1__ActionBody body = KMS__V1__ACTION_BODY__INIT;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_SET_KEY_VERSION_STATE;
    body.set_key_version_state = &s;
    s.key_name = "k1";
    s.version = 1;
    s.state = KMS__V1__KEY_VERSION_STATE__DISABLED;
    body_free(accepted(f, &body));
    s.state = KMS__V1__KEY_VERSION_STATE__ENABLED;
    body_free(accepted(f, &body));
    s.state = KMS__V1__KEY_VERSION_STATE__KEY_VERSION_STATE_UNSPECIFIED;
    refused(f, &body, KMS_EINVAL);
    s.state = KMS__V1__KEY_VERSION_STATE__DISABLED;
    s.version = 2; /* primary */
    refused(f, &body, KMS_EPRECOND);
    s.version = 9;
    refused(f, &body, KMS_ENOTFOUND);
    s.key_name = "bad name";
    refused(f, &body, KMS_EINVAL);
}

static void validate_officer_actions(void **state)
{
    struct fx *f = *state;
    Kms__V1__AddOfficer ao = KMS__V1__ADD_OFFICER__INIT;
    Kms__V1__ActionBody body = KMS__V1__ACTION_BODY__INIT;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_ADD_OFFICER;
    body.add_officer = &ao;
    ao.officer_id = "o4";
    ao.identity = "spiffe://test/o4";
    ao.signing_key_pem = f->pem;
    Kms__V1__ActionBody *b = accepted(f, &body);
    assert_non_null(strstr(b->add_officer->signing_key_pem, "BEGIN PUBLIC KEY"));
    body_free(b);
    ao.officer_id = KMS_SYSTEM_PROPOSER;
    refused(f, &body, KMS_EINVAL);
    ao.officer_id = "o 4";
    refused(f, &body, KMS_EINVAL);
    ao.officer_id = "o4";
    ao.identity = "";
    refused(f, &body, KMS_EINVAL);
    ao.identity = "spiffe://test/o1"; /* an officer already */
    refused(f, &body, KMS_EEXISTS);
    ao.identity = "spiffe://test/o4";
    ao.signing_key_pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    refused(f, &body, KMS_EINVAL);
    ao.signing_key_pem = "not a key";
    refused(f, &body, KMS_EINVAL);

    /* RemoveOfficer: 3 officers, largest threshold 2. */
    Kms__V1__RemoveOfficer ro = KMS__V1__REMOVE_OFFICER__INIT;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_REMOVE_OFFICER;
    body.remove_officer = &ro;
    ro.officer_id = "o3";
    body_free(accepted(f, &body));
    ro.officer_id = "o9";
    refused(f, &body, KMS_ENOTFOUND);
    ro.officer_id = "o/3";
    refused(f, &body, KMS_EINVAL);

    /* SetThreshold: a type with a row, 2..officers. */
    Kms__V1__SetThreshold st = KMS__V1__SET_THRESHOLD__INIT;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_SET_THRESHOLD;
    body.set_threshold = &st;
    st.action_type = "RotateKey";
    st.threshold = 3;
    body_free(accepted(f, &body));
    st.action_type = "rotate_key";
    refused(f, &body, KMS_EINVAL);
    st.action_type = "RotateKey";
    st.threshold = 1;
    refused(f, &body, KMS_EINVAL);
    st.threshold = 4;
    refused(f, &body, KMS_EINVAL);

    /* With a threshold of 3, removing one of 3 officers is refused. */
    assert_int_equal(f->store->ops->threshold_set(f->store, "RotateKey", 3), KMS_OK);
    ro.officer_id = "o3";
    body.action_case = KMS__V1__ACTION_BODY__ACTION_REMOVE_OFFICER;
    body.remove_officer = &ro;
    refused(f, &body, KMS_EPRECOND);
}

/* Every string field of every action is printable UTF-8 of bounded length
 * (base/text.h), checked before the row's own rules: an identity that
 * would repaint an officer's terminal line, bidi overrides, bytes that are
 * not UTF-8 and over-long strings are refused in policies, officer
 * identities, backends and action types alike. */
static void every_string_is_printable_text(void **state)
{
    struct fx *f = *state;
    static const char *hostile[] = {
        "~\r\x1b[2Kpolicy.decrypt: spiffe://kms.local/app", /* CR + ANSI erase line */
        "spiffe://kms.local/\xe2\x80\xae"
        "ppa", /* U+202E right-to-left override */
        "spiffe://kms.local/\xc2\x9b"
        "2K",                          /* C1 CSI */
        "spiffe://kms.local/\xff\xfe", /* not UTF-8 */
        "spiffe://kms.local/\xc0\xaf", /* overlong '/' */
        "spiffe://kms.local/a\nb",     /* a second line */
        "spiffe://kms.local/\x7f",     /* DEL */
    };
    char *list[1];
    Kms__V1__KeyPolicy pol = KMS__V1__KEY_POLICY__INIT;
    pol.decrypt = list;
    pol.n_decrypt = 1;
    Kms__V1__UpdateKeyPolicy up = KMS__V1__UPDATE_KEY_POLICY__INIT;
    up.key_name = "k1";
    up.policy = &pol;
    Kms__V1__ActionBody body = KMS__V1__ACTION_BODY__INIT;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_UPDATE_KEY_POLICY;
    body.update_key_policy = &up;
    list[0] = "spiffe://kms.local/\xc3\xa9t\xc3\xa9"; /* printable UTF-8 is fine */
    body_free(accepted(f, &body));
    for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
        list[0] = (char *)hostile[i];
        refused(f, &body, KMS_EINVAL);
    }
    char *long_id = malloc(KMS_IDENTITY_MAX + 2);
    assert_non_null(long_id);
    memset(long_id, 'a', KMS_IDENTITY_MAX + 1);
    long_id[KMS_IDENTITY_MAX + 1] = '\0';
    list[0] = long_id;
    refused(f, &body, KMS_EINVAL);

    /* AddOfficer: the identity (its PEM key may span lines). */
    Kms__V1__AddOfficer ao = KMS__V1__ADD_OFFICER__INIT;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_ADD_OFFICER;
    body.add_officer = &ao;
    ao.officer_id = "o4";
    ao.signing_key_pem = f->pem;
    for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
        ao.identity = (char *)hostile[i];
        refused(f, &body, KMS_EINVAL);
    }
    ao.identity = long_id;
    refused(f, &body, KMS_EINVAL);
    free(long_id);

    /* CreateKey's backend and SetThreshold's action type. */
    Kms__V1__CreateKey ck = KMS__V1__CREATE_KEY__INIT;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_CREATE_KEY;
    body.create_key = &ck;
    ck.key_name = "k9";
    ck.backend = "pkcs11\x1b[8m";
    refused(f, &body, KMS_EINVAL);
    Kms__V1__SetThreshold st = KMS__V1__SET_THRESHOLD__INIT;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_SET_THRESHOLD;
    body.set_threshold = &st;
    st.action_type = "RotateKey\r";
    st.threshold = 2;
    refused(f, &body, KMS_EINVAL);
}

/* ---- execution ------------------------------------------------------------------------- */

static void execute_create_key(void **state)
{
    struct fx *f = *state;
    char res[KMS_ACTION_RESULT_MAX + 1];
    char *enc[] = {"spiffe://app/a"};
    Kms__V1__KeyPolicy pol = KMS__V1__KEY_POLICY__INIT;
    Kms__V1__RotationPolicy rot = KMS__V1__ROTATION_POLICY__INIT;
    Kms__V1__CreateKey c = KMS__V1__CREATE_KEY__INIT;
    Kms__V1__ActionBody body = KMS__V1__ACTION_BODY__INIT;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_CREATE_KEY;
    body.create_key = &c;
    c.key_name = "k2";
    c.policy = &pol;
    c.rotation = &rot;
    pol.encrypt = enc;
    pol.n_encrypt = 1;
    rot.rotation_period_days = 90;
    Kms__V1__ActionBody *b = accepted(f, &body);
    int creates = f->fake.creates;
    kms_action_rec *a = executed(f, b, res, sizeof(res));
    assert_string_equal(res, "key k2 created on pkcs11, version 1");
    assert_plan(f, a, (const uint8_t *)"S", 1);
    kms_key_rec rec = key(f, "k2");
    struct grants gs;
    assert_string_equal(rec.backend, "pkcs11");
    assert_int_equal(rec.primary_version, 1);
    assert_int_equal(rec.rotation_period_days, 90);
    assert_int_equal(f->fake.creates, creates + 1);
    assert_non_null(strstr(grants_of(f, "k2", &gs), "spiffe://app/a"));
    /* Again from the plan: the key made before the "crash" is kept. */
    run_again(f, a, b);
    assert_int_equal(f->fake.creates, creates + 1);
    assert_int_equal(key(f, "k2").primary_version, 1);
    free(a);
    body_free(b);
}

static void execute_rotate_key(void **state)
{
    struct fx *f = *state;
    char res[KMS_ACTION_RESULT_MAX + 1];
    Kms__V1__RotateKey rk = KMS__V1__ROTATE_KEY__INIT;
    Kms__V1__ActionBody body = KMS__V1__ACTION_BODY__INIT;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_ROTATE_KEY;
    body.rotate_key = &rk;
    rk.key_name = "k1";
    kms_action_rec *a = executed(f, &body, res, sizeof(res));
    assert_string_equal(res, "key k1 rotated: version 2 is primary");
    const uint8_t plan[] = {'R', 0, 0, 0, 1}; /* the primary before */
    assert_plan(f, a, plan, sizeof(plan));
    assert_int_equal(key(f, "k1").primary_version, 2);
    run_again(f, a, &body); /* rotated already: not again */
    assert_int_equal(key(f, "k1").primary_version, 2);
    free(a);
}

static void execute_key_settings(void **state)
{
    struct fx *f = *state;
    char res[KMS_ACTION_RESULT_MAX + 1];
    uint32_t v = 0;
    kms_version_rec ver;
    assert_int_equal(kms_keyring_rotate(f->kr, "k1", &v), KMS_OK);
    kms_key_rec rec = key(f, "k1");
    Kms__V1__ActionBody body = KMS__V1__ACTION_BODY__INIT;

    Kms__V1__SetKeyVersionState s = KMS__V1__SET_KEY_VERSION_STATE__INIT;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_SET_KEY_VERSION_STATE;
    body.set_key_version_state = &s;
    s.key_name = "k1";
    s.version = 1;
    s.state = KMS__V1__KEY_VERSION_STATE__DISABLED;
    free(executed(f, &body, res, sizeof(res)));
    assert_string_equal(res, "key k1 version 1 disabled");
    assert_int_equal(f->store->ops->version_get(f->store, rec.id, 1, &ver), KMS_OK);
    assert_int_equal(ver.state, KMS_VERSION_DISABLED);

    Kms__V1__SetMinDecryptionVersion smv = KMS__V1__SET_MIN_DECRYPTION_VERSION__INIT;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_SET_MIN_DECRYPTION_VERSION;
    body.set_min_decryption_version = &smv;
    smv.key_name = "k1";
    smv.version = 2;
    free(executed(f, &body, res, sizeof(res)));
    assert_int_equal(key(f, "k1").min_decrypt_version, 2);

    Kms__V1__RotationPolicy rot = KMS__V1__ROTATION_POLICY__INIT;
    Kms__V1__SetRotationPolicy sr = KMS__V1__SET_ROTATION_POLICY__INIT;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_SET_ROTATION_POLICY;
    body.set_rotation_policy = &sr;
    sr.key_name = "k1";
    sr.rotation = &rot;
    rot.rotation_period_days = 30;
    kms_action_rec *a = executed(f, &body, res, sizeof(res));
    assert_plan(f, a, (const uint8_t *)"S", 1); /* started: a resumed run is not re-validated */
    free(a);
    assert_int_equal(key(f, "k1").rotation_period_days, 30);

    char *ids[] = {"spiffe://app/b", "spiffe://app/a"};
    struct grants gs;
    Kms__V1__KeyPolicy pol = KMS__V1__KEY_POLICY__INIT;
    Kms__V1__UpdateKeyPolicy up = KMS__V1__UPDATE_KEY_POLICY__INIT;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_UPDATE_KEY_POLICY;
    body.update_key_policy = &up;
    up.key_name = "k1";
    up.policy = &pol;
    pol.decrypt = ids;
    pol.n_decrypt = 2;
    free(executed(f, &body, res, sizeof(res)));
    char want[128];
    snprintf(want, sizeof(want), "%d:spiffe://app/a %d:spiffe://app/b ", (int)KMS_ACTION_DECRYPT,
             (int)KMS_ACTION_DECRYPT);
    assert_string_equal(grants_of(f, "k1", &gs), want);
    up.policy = NULL; /* nobody */
    free(executed(f, &body, res, sizeof(res)));
    assert_string_equal(grants_of(f, "k1", &gs), "");
}

static void execute_deletion_and_cancel(void **state)
{
    struct fx *f = *state;
    char res[KMS_ACTION_RESULT_MAX + 1];
    Kms__V1__ScheduleKeyDeletion sd = KMS__V1__SCHEDULE_KEY_DELETION__INIT;
    Kms__V1__ActionBody body = KMS__V1__ACTION_BODY__INIT;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_SCHEDULE_KEY_DELETION;
    body.schedule_key_deletion = &sd;
    sd.key_name = "k1";
    sd.pending_window_days = 7;
    kms_action_rec *a = executed(f, &body, res, sizeof(res));
    int64_t at = (int64_t)NOW + 7 * DAY;
    assert_int_equal(key(f, "k1").deletion_at, at);
    uint8_t plan[9] = {'D'};
    for (int i = 0; i < 8; i++)
        plan[1 + i] = (uint8_t)((uint64_t)at >> (56 - 8 * i));
    assert_plan(f, a, plan, sizeof(plan));
    /* Resumed a day later, the deletion time is the planned one. */
    f->env.now += DAY;
    run_again(f, a, &body);
    assert_int_equal(key(f, "k1").deletion_at, at);
    free(a);

    Kms__V1__CancelKeyDeletion cd = KMS__V1__CANCEL_KEY_DELETION__INIT;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_CANCEL_KEY_DELETION;
    body.cancel_key_deletion = &cd;
    cd.key_name = "k1";
    free(executed(f, &body, res, sizeof(res)));
    assert_string_equal(res, "key k1: deletion cancelled");
    assert_int_equal(key(f, "k1").deletion_at, 0);
}

static void execute_officer_actions(void **state)
{
    struct fx *f = *state;
    char res[KMS_ACTION_RESULT_MAX + 1];
    Kms__V1__ActionBody body = KMS__V1__ACTION_BODY__INIT;

    Kms__V1__AddOfficer ao = KMS__V1__ADD_OFFICER__INIT;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_ADD_OFFICER;
    body.add_officer = &ao;
    ao.officer_id = "o4";
    ao.identity = "spiffe://test/o4";
    ao.signing_key_pem = f->pem;
    Kms__V1__ActionBody *b = accepted(f, &body);
    kms_action_rec *a = executed(f, b, res, sizeof(res));
    assert_true(has_officer(f, "o4"));
    assert_true(kms_policy_is_officer(f->policy, "spiffe://test/o4")); /* reloaded */
    run_again(f, a, b); /* added before the "crash": fine */
    free(a);
    body_free(b);

    Kms__V1__RemoveOfficer ro = KMS__V1__REMOVE_OFFICER__INIT;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_REMOVE_OFFICER;
    body.remove_officer = &ro;
    ro.officer_id = "o3";
    a = executed(f, &body, res, sizeof(res));
    assert_string_equal(res, "officer o3 removed");
    assert_false(has_officer(f, "o3"));
    assert_false(kms_policy_is_officer(f->policy, "spiffe://test/o3"));
    run_again(f, a, &body); /* removed before the "crash": fine */
    free(a);

    Kms__V1__SetThreshold st = KMS__V1__SET_THRESHOLD__INIT;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_SET_THRESHOLD;
    body.set_threshold = &st;
    st.action_type = "CreateKey";
    st.threshold = 3;
    free(executed(f, &body, res, sizeof(res)));
    assert_string_equal(res, "CreateKey now needs 3 approvals");
    uint32_t t = 0;
    assert_int_equal(f->store->ops->threshold_get(f->store, "CreateKey", &t), KMS_OK);
    assert_int_equal(t, 3);
}

/* A case with no row, whatever its member points to (here a
 * SetRotationPolicy, which the old executor ran for any unknown case), is
 * refused by validate and execute, and nothing changes: no plan, no key
 * setting. */
static void unknown_case_fails_closed(void **state)
{
    struct fx *f = *state;
    char res[KMS_ACTION_RESULT_MAX + 1] = "";
    Kms__V1__RotationPolicy rot = KMS__V1__ROTATION_POLICY__INIT;
    Kms__V1__SetRotationPolicy sr = KMS__V1__SET_ROTATION_POLICY__INIT;
    Kms__V1__RotateKey rk = KMS__V1__ROTATE_KEY__INIT;
    Kms__V1__ActionBody body = KMS__V1__ACTION_BODY__INIT;
    sr.key_name = "k1";
    sr.rotation = &rot;
    rot.rotation_period_days = 5;
    rk.key_name = "k1";
    body.action_case = KMS__V1__ACTION_BODY__ACTION_ROTATE_KEY;
    body.rotate_key = &rk;
    kms_action_rec *a = executing(f, &body); /* any EXECUTING action */
    char *before = dump(f);

    body.action_case = (Kms__V1__ActionBody__ActionCase)99;
    body.set_rotation_policy = &sr;
    assert_int_equal(kms_quorum_action_validate(&f->env, &body), KMS_EINVAL);
    assert_int_equal(kms_quorum_action_execute(&f->env, a, &body, res, sizeof(res)), KMS_EINVAL);
    body.action_case = KMS__V1__ACTION_BODY__ACTION__NOT_SET;
    assert_int_equal(kms_quorum_action_validate(&f->env, &body), KMS_EINVAL);
    assert_int_equal(kms_quorum_action_execute(&f->env, a, &body, res, sizeof(res)), KMS_EINVAL);

    char *after = dump(f);
    assert_string_equal(before, after);
    assert_int_equal(key(f, "k1").rotation_period_days, 0);
    assert_int_equal(key(f, "k1").primary_version, 1);
    free(before);
    free(after);
    free(a);
}

/* Through kmsd's own path: an EXECUTING action whose stored bytes name a
 * case this kmsd has no row for is marked FAILED by kms_quorum_resume, and
 * nothing else changes. */
static void unknown_stored_action_fails(void **state)
{
    struct fx *f = *state;
    kms_quorum *q = NULL;
    kms_quorum_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    assert_int_equal(kms_quorum_open(f->store, f->kr, f->policy, &cfg, &q), KMS_OK);
    Kms__V1__RotateKey rk = KMS__V1__ROTATE_KEY__INIT;
    Kms__V1__ActionBody body = KMS__V1__ACTION_BODY__INIT;
    rk.key_name = "k1";
    body.action_case = KMS__V1__ACTION_BODY__ACTION_ROTATE_KEY;
    body.rotate_key = &rk;
    kms_action_rec *a = executing(f, &body);
    /* The stored bytes become field 99 (what a newer kmsd might write). */
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(db, "UPDATE actions SET body = ?1 WHERE id = ?2", -1, &st, NULL),
        SQLITE_OK);
    const uint8_t unknown[] = {0x98, 0x06, 0x01};
    assert_int_equal(sqlite3_bind_blob(st, 1, unknown, sizeof(unknown), SQLITE_STATIC), SQLITE_OK);
    assert_int_equal(sqlite3_bind_blob(st, 2, a->id, sizeof(a->id), SQLITE_STATIC), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    assert_int_equal(sqlite3_changes(db), 1);
    sqlite3_finalize(st);
    sqlite3_close(db);

    int creates = f->fake.creates;
    assert_int_equal(kms_quorum_resume(q), KMS_OK);
    reread(f, a);
    assert_int_equal(a->state, KMS_ACTION_FAILED);
    assert_int_equal(a->plan_len, 0);
    assert_non_null(strstr(a->result, "failed"));
    assert_int_equal(key(f, "k1").primary_version, 1);
    assert_int_equal(f->fake.creates, creates);
    free(a);
    kms_quorum_close(q);
}

/* ---- the sweep -------------------------------------------------------------------------- */

struct events {
    char key[8][KMS_KEY_NAME_MAX + 1];
    char type[8][32];
    int error[8];
    size_t n;
};

static int record_event(void *ctx, const kms_quorum_event *ev)
{
    struct events *e = ctx;
    if (e->n < 8) {
        snprintf(e->key[e->n], sizeof(e->key[0]), "%s", ev->key_name);
        snprintf(e->type[e->n], sizeof(e->type[0]), "%s", ev->type);
        e->error[e->n] = ev->error;
        e->n++;
    }
    return KMS_OK;
}

static kms_version_state version_state(struct fx *f, const char *name, uint32_t version)
{
    kms_version_rec v;
    assert_int_equal(f->store->ops->version_get(f->store, key(f, name).id, version, &v), KMS_OK);
    return v.state;
}

/* Two keys due for destruction; the device refuses to destroy the first
 * (k1, swept first: by name). The sweep reports it (an error, and a
 * key.destroy record carrying the error), destroys k2 all the same, and
 * the next sweep, the device willing again, destroys k1. */
static void sweep_goes_on_past_a_failed_key(void **state)
{
    struct fx *f = *state;
    kms_key_rec k2;
    assert_int_equal(kms_keyring_create_key(f->kr, "k2", "pkcs11", &k2), KMS_OK);
    const char *names[] = {"k1", "k2"};
    for (int i = 0; i < 2; i++) {
        kms_key_rec k = key(f, names[i]);
        assert_int_equal(f->store->ops->key_set_deletion(f->store, k.id, NOW), KMS_OK);
        assert_int_equal(kms_keyring_refresh(f->kr, k.id), KMS_OK);
    }
    kms_version_rec v1;
    assert_int_equal(f->store->ops->version_get(f->store, key(f, "k1").id, 1, &v1), KMS_OK);
    assert_int_equal(v1.ref.len, 20);
    memcpy(f->fake.fail_destroy, v1.ref.bytes, 20);
    f->fake.fail_destroy_set = 1;

    struct events ev;
    memset(&ev, 0, sizeof(ev));
    kms_quorum *q = NULL;
    kms_quorum_config cfg;
    memset(&cfg, 0, sizeof(cfg)); /* real time: NOW is past */
    cfg.event = record_event;
    cfg.event_ctx = &ev;
    assert_int_equal(kms_quorum_open(f->store, f->kr, f->policy, &cfg, &q), KMS_OK);

    assert_int_equal(kms_quorum_sweep(q), KMS_EUNAVAIL);
    assert_int_not_equal(version_state(f, "k1", 1), KMS_VERSION_DESTROYED);
    assert_int_equal(fake_slot(&f->fake, v1.ref.bytes, 20) >= 0, 1);
    assert_int_equal(version_state(f, "k2", 1), KMS_VERSION_DESTROYED);
    int reported = 0;
    for (size_t i = 0; i < ev.n; i++)
        reported += strcmp(ev.type[i], "key.destroy") == 0 && strcmp(ev.key[i], "k1") == 0 &&
                    ev.error[i] == KMS_EUNAVAIL;
    assert_int_equal(reported, 1);

    f->fake.fail_destroy_set = 0;
    assert_int_equal(kms_quorum_sweep(q), KMS_OK);
    assert_int_equal(version_state(f, "k1", 1), KMS_VERSION_DESTROYED);
    assert_int_equal(fake_slot(&f->fake, v1.ref.bytes, 20), -1);
    kms_quorum_close(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(table_matches_the_proto),
        cmocka_unit_test(officer_ids),
        cmocka_unit_test(decode_refuses_what_no_row_knows),
        cmocka_unit_test(decode_canonical),
        cmocka_unit_test_setup_teardown(validate_create_key, setup, teardown),
        cmocka_unit_test_setup_teardown(validate_key_actions, setup, teardown),
        cmocka_unit_test_setup_teardown(validate_version_state, setup, teardown),
        cmocka_unit_test_setup_teardown(validate_officer_actions, setup, teardown),
        cmocka_unit_test_setup_teardown(every_string_is_printable_text, setup, teardown),
        cmocka_unit_test_setup_teardown(execute_create_key, setup, teardown),
        cmocka_unit_test_setup_teardown(execute_rotate_key, setup, teardown),
        cmocka_unit_test_setup_teardown(execute_key_settings, setup, teardown),
        cmocka_unit_test_setup_teardown(execute_deletion_and_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(execute_officer_actions, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_case_fails_closed, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_stored_action_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(sweep_goes_on_past_a_failed_key, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
