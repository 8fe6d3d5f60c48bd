/* State integrity in the SQLite store (contract: store.h; the scheme byte
 * for byte: docs/storage.md, "State integrity").
 *
 * Every row of the security state carries a MAC, under the backend's
 * state-integrity key, over a canonical encoding of its table, primary key
 * and contents; one row of state_digest carries a generation, a digest over
 * every row MAC and a MAC over both. Which rows a transaction wrote is
 * recorded by TEMP triggers (on this connection only, never in the file) in
 * the TEMP table kms_dirty; kms_sqlite_state_seal, called by tx_end before
 * COMMIT, MACs those rows and writes the digest with the next generation,
 * so the MACs commit or roll back with the change they cover. */
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/buf.h"
#include "base/log.h"
#include "kmsd/store/store_sqlite_internal.h"

#define ROW_LABEL "kms state row v1"
#define DIGEST_LABEL "kms state digest v1"
#define STATE_LABEL "kms state v1"
/* The largest canonical row: an action (16 KiB body, 256-byte result,
 * short fields) with room to spare. */
#define ROW_MAX (24 * 1024)
#define ROW_NAME_MAX 200

_Static_assert(KMS_STATE_MAC_LEN == 32, "migration 4 fixes MAC columns at 32 bytes");

/* The tables of the security state, in digest order, with their MACed
 * columns: primary key first (n_pk of them), then the contents. Left out:
 * key_versions.usage_count (only grows, written per request) and the
 * columns that are not state (schema_version). Append only: the order and
 * the column lists are part of the format. */
struct mac_table {
    const char *name;
    int n_pk;
    int n_cols;
    const char *cols;
};

static const struct mac_table tables[] = {
    {"keys", 1, 8,
     "id, name, backend, primary_version, min_decrypt_version, created_at, rotation_period_days,"
     " deletion_at"},
    {"key_versions", 2, 5, "key_id, version, state, created_at, backend_ref"},
    {"key_policies", 3, 3, "key_id, action, identity"},
    {"officers", 1, 4, "id, identity, signing_key_pem, created_at"},
    {"thresholds", 1, 2, "action_type, threshold"},
    {"instance", 1, 1, "id"},
    {"actions", 1, 11,
     "id, type, body, digest, proposer, state, threshold, created_at, expires_at, result, plan"},
    {"approvals", 2, 4, "action_id, officer_id, signature, approved_at"},
    {"auditors", 1, 2, "identity, created_at"},
};
#define N_TABLES ((int)(sizeof(tables) / sizeof(tables[0])))

/* Column type tags of the encoding. */
enum { TAG_NULL = 0, TAG_INT = 1, TAG_TEXT = 2, TAG_BLOB = 3 };

/* Statements of this file are prepared for their one use (admin writes and
 * start-up only: never on the data plane). */
static int prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st)
{
    int rc = sqlite3_prepare_v2(db, sql, -1, st, NULL);
    if (rc != SQLITE_OK)
        return kms_sqlite_error(db, rc, "state integrity: prepare");
    return KMS_OK;
}

/* The canonical encoding of the current row of st, whose columns from
 * `first` on are t's MACed columns in order (docs/storage.md). */
static int encode_row(const struct mac_table *t, sqlite3_stmt *st, int first, uint8_t *buf,
                      size_t cap, size_t *len)
{
    kms_buf_writer w;
    int r;

    kms_buf_writer_init(&w, buf, cap);
    if ((r = kms_buf_put_lv32(&w, ROW_LABEL, sizeof(ROW_LABEL) - 1)) != 0 ||
        (r = kms_buf_put_lv32(&w, t->name, strlen(t->name))) != 0)
        return r;
    for (int c = first; c < first + t->n_cols; c++) {
        const void *p;
        switch (sqlite3_column_type(st, c)) {
        case SQLITE_NULL:
            r = kms_buf_put_u8(&w, TAG_NULL);
            break;
        case SQLITE_INTEGER:
            if ((r = kms_buf_put_u8(&w, TAG_INT)) == 0)
                r = kms_buf_put_u64be(&w, (uint64_t)sqlite3_column_int64(st, c));
            break;
        case SQLITE_TEXT:
            p = sqlite3_column_text(st, c);
            if ((r = kms_buf_put_u8(&w, TAG_TEXT)) == 0)
                r = kms_buf_put_lv32(&w, p ? p : "", (size_t)sqlite3_column_bytes(st, c));
            break;
        case SQLITE_BLOB:
            p = sqlite3_column_blob(st, c);
            if ((r = kms_buf_put_u8(&w, TAG_BLOB)) == 0)
                r = kms_buf_put_lv32(&w, p ? p : "", (size_t)sqlite3_column_bytes(st, c));
            break;
        default: /* a float is never written by kmsd */
            return kms_error_set(KMS_ESTORE, "state integrity: %s: column %d has a foreign type",
                                 t->name, c - first);
        }
        if (r != 0)
            return r == KMS_ETOOBIG
                       ? kms_error_set(KMS_ESTORE, "state integrity: a %s row is too large",
                                       t->name)
                       : r;
    }
    *len = w.len;
    return KMS_OK;
}

/* "key_id=ab12..., version=3": the primary key of st's row (columns from
 * first on), printable (control bytes become '?'). */
static void row_name(const struct mac_table *t, sqlite3_stmt *st, int first, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    const char *col = t->cols;
    size_t o = 0;
    out[0] = '\0';
    for (int c = first; c < first + t->n_pk && o + 1 < cap; c++) {
        size_t nl = strcspn(col, ",");
        int k = snprintf(out + o, cap - o, "%s%.*s=", c > first ? ", " : "", (int)nl, col);
        if (k < 0 || (size_t)k >= cap - o)
            break;
        o += (size_t)k;
        col += nl;
        col += strspn(col, ", ");
        const unsigned char *p = sqlite3_column_blob(st, c);
        size_t n = (size_t)sqlite3_column_bytes(st, c);
        int type = sqlite3_column_type(st, c);
        if (type == SQLITE_INTEGER) {
            k = snprintf(out + o, cap - o, "%lld", (long long)sqlite3_column_int64(st, c));
            o += k > 0 && (size_t)k < cap - o ? (size_t)k : 0;
            continue;
        }
        for (size_t i = 0; p != NULL && i < n && o + 3 < cap; i++) {
            if (type == SQLITE_BLOB) {
                out[o++] = hex[p[i] >> 4];
                out[o++] = hex[p[i] & 15];
            } else {
                out[o++] = p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '?';
            }
        }
        out[o] = '\0';
    }
}

static int mac_of(struct sqlite_store *s, const uint8_t *in, size_t len,
                  uint8_t out[KMS_STATE_MAC_LEN])
{
    int r = s->mac_fn(s->mac_ctx, in, len, out);
    if (r != 0)
        kms_log_error("state integrity: the state MAC failed: %s", kms_error_detail());
    return r;
}

/* MACs the row rid of table t (if it still exists) and stores the MAC. */
static int seal_row(struct sqlite_store *s, const struct mac_table *t, sqlite3_int64 rid,
                    uint8_t *buf)
{
    char sql[512];
    sqlite3_stmt *st = NULL;
    uint8_t mac[KMS_STATE_MAC_LEN];
    size_t len = 0;
    int r, rc;

    snprintf(sql, sizeof(sql), "SELECT %s FROM main.%s WHERE rowid = ?1", t->cols, t->name);
    if ((r = prepare(s->db, sql, &st)) != 0)
        goto out;
    sqlite3_bind_int64(st, 1, rid);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) /* written, then deleted in the same transaction */
        goto out;
    if (rc != SQLITE_ROW) {
        r = kms_sqlite_error(s->db, rc, "state integrity: read row");
        goto out;
    }
    if ((r = encode_row(t, st, 0, buf, ROW_MAX, &len)) != 0 || (r = mac_of(s, buf, len, mac)) != 0)
        goto out;
    sqlite3_finalize(st);
    snprintf(sql, sizeof(sql), "UPDATE main.%s SET mac = ?1 WHERE rowid = ?2", t->name);
    if ((r = prepare(s->db, sql, &st)) != 0)
        goto out;
    sqlite3_bind_blob(st, 1, mac, sizeof(mac), SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, rid);
    if ((rc = sqlite3_step(st)) != SQLITE_DONE)
        r = kms_sqlite_error(s->db, rc, "state integrity: write row MAC");
out:
    sqlite3_finalize(st);
    return r;
}

/* SHA-256 over the label, then per table in order: its name, its row
 * count and its row MACs in byte order (a row without a MAC counts as 32
 * zero bytes: the row check reports it). */
static int compute_digest(struct sqlite_store *s, uint8_t out[32])
{
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    sqlite3_stmt *st = NULL;
    uint8_t lv[8];
    int r = KMS_OK, rc;

    if (h == NULL || EVP_DigestInit_ex(h, EVP_sha256(), NULL) != 1) {
        r = kms_error_set(KMS_ENOMEM, "state digest: no hash context");
        goto out;
    }
#define PUT_LV(p, n)                                                                               \
    do {                                                                                           \
        uint32_t n_ = (uint32_t)(n);                                                               \
        for (int i_ = 0; i_ < 4; i_++)                                                             \
            lv[i_] = (uint8_t)(n_ >> (24 - 8 * i_));                                               \
        EVP_DigestUpdate(h, lv, 4);                                                                \
        EVP_DigestUpdate(h, (p), n_);                                                              \
    } while (0)
    PUT_LV(DIGEST_LABEL, sizeof(DIGEST_LABEL) - 1);
    for (int t = 0; t < N_TABLES; t++) {
        char sql[256];
        uint64_t count = 0;
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM main.%s", tables[t].name);
        if ((r = prepare(s->db, sql, &st)) != 0)
            goto out;
        if ((rc = sqlite3_step(st)) != SQLITE_ROW) {
            r = kms_sqlite_error(s->db, rc, "state digest: count");
            goto out;
        }
        count = (uint64_t)sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        st = NULL;
        PUT_LV(tables[t].name, strlen(tables[t].name));
        for (int i = 0; i < 8; i++)
            lv[i] = (uint8_t)(count >> (56 - 8 * i));
        EVP_DigestUpdate(h, lv, 8);
        snprintf(sql, sizeof(sql), "SELECT mac FROM main.%s ORDER BY mac", tables[t].name);
        if ((r = prepare(s->db, sql, &st)) != 0)
            goto out;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            static const uint8_t none[KMS_STATE_MAC_LEN];
            const void *m = sqlite3_column_blob(st, 0);
            int ok = m != NULL && sqlite3_column_bytes(st, 0) == KMS_STATE_MAC_LEN;
            EVP_DigestUpdate(h, ok ? m : none, KMS_STATE_MAC_LEN);
        }
        if (rc != SQLITE_DONE) {
            r = kms_sqlite_error(s->db, rc, "state digest: row MACs");
            goto out;
        }
        sqlite3_finalize(st);
        st = NULL;
    }
#undef PUT_LV
    if (EVP_DigestFinal_ex(h, out, NULL) != 1)
        r = kms_error_set(KMS_EINTERNAL, "state digest: hash failed");
out:
    sqlite3_finalize(st);
    EVP_MD_CTX_free(h);
    return r;
}

/* The state row's MAC: over the label, the generation and the digest. */
static int state_mac(struct sqlite_store *s, uint64_t generation, const uint8_t digest[32],
                     uint8_t mac[KMS_STATE_MAC_LEN])
{
    uint8_t buf[64];
    kms_buf_writer w;
    int r;
    kms_buf_writer_init(&w, buf, sizeof(buf));
    if ((r = kms_buf_put_lv32(&w, STATE_LABEL, sizeof(STATE_LABEL) - 1)) != 0 ||
        (r = kms_buf_put_u64be(&w, generation)) != 0 ||
        (r = kms_buf_put_bytes(&w, digest, 32)) != 0)
        return r;
    return mac_of(s, buf, w.len, mac);
}

/* The digest row: *found 0 if absent. */
static int read_state(struct sqlite_store *s, int *found, uint64_t *generation, uint8_t digest[32],
                      uint8_t mac[KMS_STATE_MAC_LEN])
{
    sqlite3_stmt *st = NULL;
    int r = KMS_OK, rc;
    *found = 0;
    if ((r = prepare(s->db, "SELECT generation, digest, mac FROM main.state_digest WHERE id = 1",
                     &st)) != 0)
        goto out;
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        goto out;
    if (rc != SQLITE_ROW || sqlite3_column_bytes(st, 1) != 32 ||
        sqlite3_column_bytes(st, 2) != KMS_STATE_MAC_LEN || sqlite3_column_int64(st, 0) < 1) {
        r = rc != SQLITE_ROW ? kms_sqlite_error(s->db, rc, "state digest: read")
                             : kms_error_set(KMS_ESTORE, "state digest: malformed row");
        goto out;
    }
    *generation = (uint64_t)sqlite3_column_int64(st, 0);
    memcpy(digest, sqlite3_column_blob(st, 1), 32);
    memcpy(mac, sqlite3_column_blob(st, 2), KMS_STATE_MAC_LEN);
    *found = 1;
out:
    sqlite3_finalize(st);
    return r;
}

int kms_sqlite_state_seal(struct sqlite_store *s)
{
    sqlite3_stmt *st = NULL;
    sqlite3_int64(*dirty)[2] = NULL;
    size_t n = 0, cap = 0;
    uint8_t *buf = NULL, digest[32], old_digest[32], mac[KMS_STATE_MAC_LEN];
    uint64_t generation = 0;
    int r = KMS_OK, rc, found = 0;

    if (s->mac_fn == NULL)
        return KMS_OK;
    st = s->dirty_st;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            size_t ncap = cap ? 2 * cap : 16;
            void *p = realloc(dirty, ncap * sizeof(*dirty));
            if (p == NULL) {
                sqlite3_reset(st);
                st = NULL; /* kept prepared, never finalized here */
                r = kms_error_set(KMS_ENOMEM, "out of memory");
                goto out;
            }
            dirty = p;
            cap = ncap;
        }
        dirty[n][0] = sqlite3_column_int64(st, 0);
        /* a deletion is recorded with a NULL rowid: nothing to MAC */
        dirty[n][1] = sqlite3_column_type(st, 1) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 1);
        n++;
    }
    sqlite3_reset(st);
    st = NULL;
    if (rc != SQLITE_DONE) {
        r = kms_sqlite_error(s->db, rc, "state integrity: changed rows");
        goto out;
    }
    if (n == 0)
        goto out;
    if ((buf = malloc(ROW_MAX)) == NULL) {
        r = kms_error_set(KMS_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (dirty[i][0] < 0 || dirty[i][0] >= N_TABLES) {
            r = kms_error_set(KMS_EINTERNAL, "state integrity: unknown table %lld",
                              (long long)dirty[i][0]);
            goto out;
        }
        if (dirty[i][1] >= 0 && (r = seal_row(s, &tables[dirty[i][0]], dirty[i][1], buf)) != 0)
            goto out;
    }
    if ((r = kms_sq_script(s->db, "DELETE FROM temp.kms_dirty", "state integrity: reset")) != 0 ||
        (r = read_state(s, &found, &generation, old_digest, mac)) != 0 ||
        (r = compute_digest(s, digest)) != 0)
        goto out;
    generation = found ? generation + 1 : 1;
    if ((r = state_mac(s, generation, digest, mac)) != 0)
        goto out;
    if ((r = prepare(s->db,
                     "INSERT OR REPLACE INTO main.state_digest (id, generation, digest, mac)"
                     " VALUES (1, ?1, ?2, ?3)",
                     &st)) != 0)
        goto out;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)generation);
    sqlite3_bind_blob(st, 2, digest, 32, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, mac, sizeof(mac), SQLITE_STATIC);
    if ((rc = sqlite3_step(st)) != SQLITE_DONE)
        r = kms_sqlite_error(s->db, rc, "state digest: write");
out:
    sqlite3_finalize(st);
    free(dirty);
    free(buf);
    return r;
}

/* ---- ops ----------------------------------------------------------------------------- */

static int data_version(struct sqlite_store *s, sqlite3_int64 *v);

int kms_sqlite_state_attach(kms_store *store, kms_store_mac_fn mac, void *ctx,
                            void (*ctx_free)(void *ctx))
{
    struct sqlite_store *s;
    char sql[1024];
    int r = KMS_OK;

    if (store == NULL || mac == NULL)
        return kms_error_set(KMS_EINVAL, "store: no state MAC");
    s = kms_sqlite_impl(store);
    kms_sqlite_lock(s);
    if (s->mac_fn != NULL) {
        r = kms_error_set(KMS_EEXISTS, "store: state MAC already attached");
        goto out;
    }
    if ((r = kms_sq_script(s->db, "CREATE TEMP TABLE kms_dirty (tbl INTEGER NOT NULL, rid INTEGER)",
                           "state integrity: changed rows table")) != 0)
        goto out;
    for (int t = 0; t < N_TABLES && r == 0; t++) {
        snprintf(sql, sizeof(sql),
                 "CREATE TEMP TRIGGER kms_ins_%d AFTER INSERT ON main.%s"
                 " BEGIN INSERT INTO kms_dirty VALUES (%d, NEW.rowid); END;"
                 "CREATE TEMP TRIGGER kms_upd_%d AFTER UPDATE OF %s ON main.%s"
                 " BEGIN INSERT INTO kms_dirty VALUES (%d, NEW.rowid); END;"
                 "CREATE TEMP TRIGGER kms_del_%d AFTER DELETE ON main.%s"
                 " BEGIN INSERT INTO kms_dirty VALUES (%d, NULL); END;",
                 t, tables[t].name, t, t, tables[t].cols, tables[t].name, t, t, tables[t].name, t);
        r = kms_sq_script(s->db, sql, "state integrity: triggers");
    }
    if (r == 0)
        r = prepare(s->db, "SELECT DISTINCT tbl, rid FROM temp.kms_dirty", &s->dirty_st);
    if (r == 0)
        r = prepare(s->db, "PRAGMA data_version", &s->data_version_st);
    if (r == 0) {
        s->mac_fn = mac;
        s->mac_ctx = ctx;
        s->mac_ctx_free = ctx_free;
    }
out:
    kms_sqlite_unlock(s);
    return r;
}

int kms_sqlite_state_sealed(kms_store *store, int *sealed)
{
    struct sqlite_store *s;
    uint8_t d[32], m[KMS_STATE_MAC_LEN];
    uint64_t g = 0;
    int r, found = 0;
    if (store == NULL || sealed == NULL)
        return kms_error_set(KMS_EINVAL, "store: no output");
    s = kms_sqlite_impl(store);
    kms_sqlite_lock(s);
    r = read_state(s, &found, &g, d, m);
    kms_sqlite_unlock(s);
    if (r == 0)
        *sealed = found;
    return r;
}

int kms_sqlite_state_seal_all(kms_store *store)
{
    struct sqlite_store *s;
    char sql[256];
    int r;
    if (store == NULL)
        return kms_error_set(KMS_EINVAL, "store: no store");
    s = kms_sqlite_impl(store);
    kms_sqlite_lock(s);
    if (s->mac_fn == NULL) {
        r = kms_error_set(KMS_EPRECOND, "store: no state MAC attached");
        goto out;
    }
    /* Sealing takes the rows as they are (trust on first use): no guard. */
    if ((r = kms_sqlite_tx_begin(s)) != 0)
        goto out;
    /* Every row counts as written: tx_end MACs them all and the digest. */
    for (int t = 0; t < N_TABLES && r == 0; t++) {
        snprintf(sql, sizeof(sql), "INSERT INTO temp.kms_dirty SELECT %d, rowid FROM main.%s", t,
                 tables[t].name);
        r = kms_sq_script(s->db, sql, "state integrity: seal");
    }
    r = kms_sqlite_tx_end(s, r);
    /* Sealed: verified by construction, as of this connection's view. */
    if (r == 0 && data_version(s, &s->verified_version) == 0)
        s->verified = s->armed = 1;
out:
    kms_sqlite_unlock(s);
    return r;
}

/* Checks the rows of t selected by where (bound to key, 16 bytes, if not
 * NULL); each failure goes to cb and is counted. */
static int verify_rows(struct sqlite_store *s, const struct mac_table *t, const char *where,
                       const uint8_t *key, uint8_t *buf, kms_store_state_failure_cb cb, void *ctx,
                       size_t *failures)
{
    char sql[512], name[ROW_NAME_MAX];
    sqlite3_stmt *st = NULL;
    uint8_t mac[KMS_STATE_MAC_LEN];
    size_t len = 0;
    int r = KMS_OK, rc;

    snprintf(sql, sizeof(sql), "SELECT mac, %s FROM main.%s %s", t->cols, t->name,
             where ? where : "");
    if ((r = prepare(s->db, sql, &st)) != 0)
        goto out;
    if (key != NULL)
        sqlite3_bind_blob(st, 1, key, KMS_KEY_ID_LEN, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *check = NULL;
        if (sqlite3_column_type(st, 0) != SQLITE_BLOB ||
            sqlite3_column_bytes(st, 0) != KMS_STATE_MAC_LEN) {
            check = "row has no MAC (written without the state-integrity key)";
        } else {
            if ((r = encode_row(t, st, 1, buf, ROW_MAX, &len)) != 0 ||
                (r = mac_of(s, buf, len, mac)) != 0)
                goto out;
            if (CRYPTO_memcmp(mac, sqlite3_column_blob(st, 0), sizeof(mac)) != 0)
                check = "row MAC does not verify (the row was changed or forged)";
        }
        if (check != NULL) {
            (*failures)++;
            row_name(t, st, 1, name, sizeof(name));
            if ((r = cb(ctx, t->name, name, check)) != 0)
                goto out;
        }
    }
    if (rc != SQLITE_DONE)
        r = kms_sqlite_error(s->db, rc, "state integrity: read rows");
out:
    sqlite3_finalize(st);
    return r;
}

/* The digest row's MAC and the digest against the rows. */
static int verify_digest(struct sqlite_store *s, kms_store_state_failure_cb cb, void *ctx,
                         size_t *failures, uint64_t *generation)
{
    uint8_t digest[32], stored[32], mac[KMS_STATE_MAC_LEN], want[KMS_STATE_MAC_LEN];
    uint64_t g = 0;
    int r, found = 0;
    const char *check = NULL;

    if ((r = read_state(s, &found, &g, stored, mac)) != 0)
        return r;
    if (!found) {
        check = "missing: the state was never sealed (`kmsd seal-state`) or the row was deleted";
    } else {
        if ((r = state_mac(s, g, stored, want)) != 0 || (r = compute_digest(s, digest)) != 0)
            return r;
        if (CRYPTO_memcmp(want, mac, sizeof(mac)) != 0)
            check = "digest MAC does not verify (the generation or digest was changed)";
        else if (CRYPTO_memcmp(digest, stored, sizeof(digest)) != 0)
            check = "digest does not match the rows (a row was deleted, added or rolled back)";
    }
    if (found)
        *generation = g;
    if (check == NULL)
        return KMS_OK;
    (*failures)++;
    return cb(ctx, "state_digest", "id=1", check);
}

int kms_sqlite_state_verify(kms_store *store, kms_store_state_failure_cb cb, void *ctx,
                            size_t *failures, uint64_t *generation)
{
    struct sqlite_store *s;
    uint8_t *buf = NULL;
    size_t n = 0;
    uint64_t g = 0;
    sqlite3_int64 v = 0;
    int r = KMS_OK;

    if (store == NULL || cb == NULL || failures == NULL || generation == NULL)
        return kms_error_set(KMS_EINVAL, "store: no callback");
    s = kms_sqlite_impl(store);
    if ((buf = malloc(ROW_MAX)) == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    kms_sqlite_lock(s);
    if (s->mac_fn == NULL) {
        r = kms_error_set(KMS_EPRECOND, "store: no state MAC attached");
        goto out;
    }
    /* One read transaction: rows and digest from the same snapshot. */
    if ((r = data_version(s, &v)) != 0 ||
        (r = kms_sq_script(s->db, "BEGIN", "state integrity: verify")) != 0)
        goto out;
    for (int t = 0; t < N_TABLES && r == 0; t++)
        r = verify_rows(s, &tables[t], NULL, NULL, buf, cb, ctx, &n);
    if (r == 0)
        r = verify_digest(s, cb, ctx, &n, &g);
    if (kms_sq_script(s->db, "COMMIT", "state integrity: verify end") != 0 && r == 0)
        r = KMS_ESTORE;
    /* A clean start-up check is the run-time guard's first check. */
    s->verified = r == 0 && n == 0;
    s->verified_version = v;
    if (s->verified)
        s->armed = 1;
out:
    kms_sqlite_unlock(s);
    free(buf);
    if (r == 0) {
        *failures = n;
        *generation = g;
    }
    return r;
}

/* The first failure of verify_key, kept for its error detail. */
struct first_failure {
    char text[256];
};

static int keep_first(void *ctx, const char *table, const char *row, const char *check)
{
    struct first_failure *f = ctx;
    if (f->text[0] == '\0')
        snprintf(f->text, sizeof(f->text), "%s (%s): %s", table, row, check);
    return KMS_OK;
}

int kms_sqlite_state_verify_key(kms_store *store, const uint8_t id[KMS_KEY_ID_LEN])
{
    struct sqlite_store *s;
    struct first_failure f = {{0}};
    uint8_t *buf = NULL;
    uint64_t g = 0;
    size_t n = 0;
    int r = KMS_OK;

    if (store == NULL || id == NULL)
        return kms_error_set(KMS_EINVAL, "store: no key id");
    s = kms_sqlite_impl(store);
    if ((buf = malloc(ROW_MAX)) == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    kms_sqlite_lock(s);
    if (s->mac_fn == NULL)
        goto out;
    if ((r = kms_sq_script(s->db, "BEGIN", "state integrity: verify")) != 0)
        goto out;
    if ((r = verify_rows(s, &tables[0], "WHERE id = ?1", id, buf, keep_first, &f, &n)) == 0 &&
        (r = verify_rows(s, &tables[1], "WHERE key_id = ?1", id, buf, keep_first, &f, &n)) == 0)
        r = verify_digest(s, keep_first, &f, &n, &g);
    if (kms_sq_script(s->db, "COMMIT", "state integrity: verify end") != 0 && r == 0)
        r = KMS_ESTORE;
    if (r == 0 && n > 0)
        r = kms_error_set(KMS_EAUTH, "state integrity: %s", f.text);
out:
    kms_sqlite_unlock(s);
    free(buf);
    return r;
}

/* ---- run-time guard ------------------------------------------------------------------ */

static int data_version(struct sqlite_store *s, sqlite3_int64 *v)
{
    int rc = sqlite3_step(s->data_version_st);
    if (rc == SQLITE_ROW)
        *v = sqlite3_column_int64(s->data_version_st, 0);
    sqlite3_reset(s->data_version_st);
    return rc == SQLITE_ROW ? KMS_OK : kms_sqlite_error(s->db, rc, "state integrity: data_version");
}

/* Test builds only (kmsd's KMS_TEST_NO_STATE_GUARD): the run-time guard
 * off, so a test can play a hostile server by rewriting rows under a
 * running kmsd. Start-up verification is unaffected. */
static atomic_int guard_off;

void kms_store_sqlite_test_unguard(void)
{
    atomic_store(&guard_off, 1);
}

int kms_sqlite_state_guard(struct sqlite_store *s)
{
    struct first_failure f = {{0}};
    uint8_t *buf = NULL;
    sqlite3_int64 v = 0;
    uint64_t g = 0;
    size_t n = 0;
    struct timespec t0, t1;
    int r, wrap;

    if (s->mac_fn == NULL || s->data_version_st == NULL || !s->armed || atomic_load(&guard_off))
        return KMS_OK;
    /* Read before the check: a commit racing it moves the version again
     * and the next statement checks again. */
    if ((r = data_version(s, &v)) != 0)
        return r;
    if (s->verified && v == s->verified_version)
        return KMS_OK;
    if ((buf = malloc(ROW_MAX)) == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* Inside a write transaction the snapshot is already held; else one
     * read transaction covers rows and digest. */
    wrap = sqlite3_get_autocommit(s->db);
    if (wrap && (r = kms_sq_script(s->db, "BEGIN", "state integrity: check")) != 0)
        goto out;
    for (int t = 0; t < N_TABLES && r == 0; t++)
        r = verify_rows(s, &tables[t], NULL, NULL, buf, keep_first, &f, &n);
    if (r == 0)
        r = verify_digest(s, keep_first, &f, &n, &g);
    if (wrap && kms_sq_script(s->db, "COMMIT", "state integrity: check end") != 0 && r == 0)
        r = KMS_ESTORE;
    if (r == 0 && n > 0)
        r = kms_error_set(KMS_EAUTH, "state integrity: %s", f.text);
out:
    free(buf);
    s->verified = r == 0;
    s->verified_version = v;
    if (r != 0 && !s->failing)
        kms_log_error("state integrity: the database changed under kmsd and no longer verifies; "
                      "refusing every operation on it: %s",
                      kms_error_detail());
    s->failing = r != 0;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (r == 0)
        kms_log_info(
            "state integrity: the state verifies at generation %" PRIu64
            " (checked again in %.1f ms: another connection wrote the database)",
            g, (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
    return r;
}
