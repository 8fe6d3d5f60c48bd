/* The one way the SQLite store runs a statement, and what every file of
 * the store shares: the connection and its lock, the statement table, the
 * error mapping, transactions and checked column readers.
 *
 * The lowest file of the store: store_sqlite_schema.c (migrations),
 * store_sqlite_authz.c (policies, officers, thresholds) and
 * store_sqlite_quorum.c (instance id, lifecycle, actions) build on it, and
 * store_sqlite.c (open, keys, versions, usage) is the top that builds the
 * ops table. Not a public header.
 *
 * A statement's life:
 *
 *     kms_sq q;
 *     if ((r = kms_sq_open(&q, s, ST_KEY_BY_ID, KMS_SQ_ARGS(KMS_SQ_ID(id)))) != 0 ||
 *         (r = kms_sq_one(&q, "no such key")) != 0 ||
 *         (r = kms_sq_int(&q, 3, 0, UINT32_MAX, &v, "primary version")) != 0)
 *         goto out;
 *     ...
 * out:
 *     kms_sq_close(&q);
 *
 * Every statement id in enum stmt_id is prepared once when the store opens
 * (SQL text in store_sqlite_stmt.c) and reset, with its bindings cleared,
 * by kms_sq_close. The migrations run before those statements can exist
 * (the tables are not there yet), so they use kms_sq_open_once, which
 * prepares on a bare connection and finalizes at kms_sq_close. */
#ifndef KMS_STORE_SQLITE_QUERY_H
#define KMS_STORE_SQLITE_QUERY_H

#include <pthread.h>
#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "kmsd/store/store.h"

#define BACKEND_NAME_MAX 15 /* bytes, without the NUL */
#define KMS_SQ_PARAMS_MAX 16

/* The store's statements (SQL text and a name for errors in
 * store_sqlite_stmt.c). */
enum stmt_id {
    ST_KEY_INSERT,
    ST_KEY_BY_NAME,
    ST_KEY_BY_ID,
    ST_KEY_PAGE,
    ST_KEY_EXISTS,
    ST_KEY_SET_MIN_DECRYPT,
    ST_KEY_SET_ROTATION,
    ST_KEY_SET_DELETION,
    ST_VERSION_INSERT,
    ST_SET_PRIMARY,
    ST_VERSION_GET,
    ST_VERSION_PAGE,
    ST_VERSION_STATE,
    ST_VERSION_DESTROY,
    ST_USAGE_ADD,
    ST_USAGE_GET,
    ST_POLICY_DELETE,
    ST_POLICY_INSERT,
    ST_POLICY_PAGE,
    ST_OFFICER_INSERT,
    ST_OFFICER_DELETE,
    ST_OFFICER_PAGE,
    ST_THRESHOLD_SET,
    ST_THRESHOLD_GET,
    ST_THRESHOLD_PAGE,
    ST_AUDITOR_INSERT,
    ST_AUDITOR_DELETE,
    ST_AUDITOR_PAGE,
    ST_INSTANCE_ID,
    ST_ACTION_INSERT,
    ST_ACTION_GET,
    ST_ACTION_APPROVALS,
    ST_ACTION_IDS_PENDING,
    ST_ACTION_IDS_ALL,
    ST_ACTION_MOVE,
    ST_ACTION_APPROVAL_INSERT,
    ST_ACTION_SET_PLAN,
    ST_ACTION_FINISH,
    ST_ACTION_EXPIRE_DUE,
    ST_ACTION_COUNT_PENDING,
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_COUNT
};

struct kms_sqlite_sql {
    const char *what; /* names the statement in error details */
    const char *text;
};
extern const struct kms_sqlite_sql kms_sqlite_sql[ST_COUNT];

struct sqlite_store {
    kms_store base; /* first: a kms_store * is a struct sqlite_store * */
    sqlite3 *db;
    pthread_mutex_t mu;
    int mu_ready;
    sqlite3_stmt *st[ST_COUNT]; /* prepared at open, by kms_sqlite_prepare_all */
    /* The state-integrity MAC once attached (store_sqlite_mac.c): every
     * write transaction then MACs the rows it changed and the state digest
     * before it commits. NULL: the state is not authenticated. */
    kms_store_mac_fn mac_fn;
    void *mac_ctx;
    void (*mac_ctx_free)(void *ctx); /* called at close */
    sqlite3_stmt *dirty_st;          /* the rows the open transaction wrote (kept prepared:
                                        every usage reservation commits through it) */
    /* The run-time guard (kms_sqlite_state_guard): PRAGMA data_version,
     * kept prepared, and its value when the whole state last verified;
     * verified is 0 until then and after any failure. Armed by the first
     * clean full check (start-up) or seal; before that (verify-state, a
     * start-up that is about to refuse) reads are not guarded. */
    sqlite3_stmt *data_version_st;
    int armed;
    sqlite3_int64 verified_version;
    int verified;
    int failing; /* logged once per run of failures */
};

struct sqlite_store *kms_sqlite_impl(kms_store *s);

/* The one connection's mutex; aborts if it cannot be taken or released. */
void kms_sqlite_lock(struct sqlite_store *s);
void kms_sqlite_unlock(struct sqlite_store *s);

/* Prepares every statement of kms_sqlite_sql (after the migrations).
 * KMS_ESTORE with the statement's name on failure; those prepared stay in
 * s->st for kms_sqlite_finalize_all. */
int kms_sqlite_prepare_all(struct sqlite_store *s) KMS_MUST_CHECK;
void kms_sqlite_finalize_all(struct sqlite_store *s);

/* Maps an SQLite result code (extended codes on) to a kms error with a
 * detail naming `what` (never values): unique/primary key -> KMS_EEXISTS,
 * foreign key -> KMS_ENOTFOUND, busy/locked -> KMS_EUNAVAIL, no memory ->
 * KMS_ENOMEM, anything else KMS_ESTORE. */
int kms_sqlite_error(sqlite3 *db, int rc, const char *what) KMS_MUST_CHECK;

/* A rollback after a failure must not replace the failure's detail (any
 * kms_error_set overwrites it), so callers save it around the rollback. */
struct kms_sqlite_detail {
    char text[256];
};
void kms_sqlite_detail_save(struct kms_sqlite_detail *d);
/* Puts the saved detail back under code r and returns r. */
int kms_sqlite_detail_restore(const struct kms_sqlite_detail *d, int r) KMS_MUST_CHECK;

/* BEGIN IMMEDIATE; and commit if r is 0, else roll back (keeping r's
 * detail); returns the first failure. Call with the lock held and every
 * statement closed. */
int kms_sqlite_tx_begin(struct sqlite_store *s) KMS_MUST_CHECK;
int kms_sqlite_tx_end(struct sqlite_store *s, int r) KMS_MUST_CHECK;

/* With the state MAC attached: MACs every row the open transaction wrote,
 * then the state digest with the next generation (store_sqlite_mac.c).
 * tx_end calls it before COMMIT; a no-op without the MAC or changes. */
int kms_sqlite_state_seal(struct sqlite_store *s) KMS_MUST_CHECK;

/* With the state MAC attached: 0 if the state is as last verified, else
 * KMS_EAUTH naming the table, row and check that failed. Another
 * connection's commit (sqlite3 on the file, a second process) moves
 * PRAGMA data_version; then every row MAC and the digest are verified
 * again before the statement runs. This connection's own commits are
 * sealed as they are written and keep the state verified. A failure
 * holds until a full check passes again. Inactive until the start-up
 * check (kms_sqlite_state_verify) passed or the state was sealed.
 * kms_sq_open calls it; lock held. */
int kms_sqlite_state_guard(struct sqlite_store *s) KMS_MUST_CHECK;

/* 0 if the key exists, KMS_ENOTFOUND ("<what>: no such key") if not.
 * Lock held. */
int kms_sqlite_key_exists(struct sqlite_store *s, const uint8_t id[KMS_KEY_ID_LEN],
                          const char *what) KMS_MUST_CHECK;

/* ---- statements -------------------------------------------------------------------- */

enum kms_sq_type { KMS_SQ_T_INT = 1, KMS_SQ_T_TEXT = 2, KMS_SQ_T_BLOB = 3 };

/* One bound parameter (?1, ?2, ... in order). Text and blobs are bound
 * SQLITE_STATIC: they must outlive the statement's use (until close). */
typedef struct kms_sq_param {
    enum kms_sq_type type;
    sqlite3_int64 i;
    const void *p;
    size_t len;
} kms_sq_param;

#define KMS_SQ_INT(v) ((kms_sq_param){KMS_SQ_T_INT, (sqlite3_int64)(v), NULL, 0})
#define KMS_SQ_TEXT(t) ((kms_sq_param){KMS_SQ_T_TEXT, 0, (t), 0})
#define KMS_SQ_BLOB(b, n) ((kms_sq_param){KMS_SQ_T_BLOB, 0, (b), (n)})
#define KMS_SQ_ID(b) KMS_SQ_BLOB((b), KMS_KEY_ID_LEN) /* key and action ids: 16 bytes */
/* The parameter list argument pair: KMS_SQ_ARGS(KMS_SQ_INT(1), KMS_SQ_TEXT(t)). */
#define KMS_SQ_ARGS(...)                                                                           \
    (const kms_sq_param[]){__VA_ARGS__},                                                           \
        sizeof((const kms_sq_param[]){__VA_ARGS__}) / sizeof(kms_sq_param)
#define KMS_SQ_NO_ARGS NULL, 0

_Static_assert(KMS_ACTION_ID_LEN == KMS_KEY_ID_LEN, "KMS_SQ_ID binds action ids too");

/* A statement in use. A zeroed kms_sq may be closed. */
typedef struct kms_sq {
    sqlite3 *db;
    sqlite3_stmt *st;
    const char *what;
    int once; /* finalize, not reset, at close */
} kms_sq;

/* The store's prepared statement id, reset, with params bound (lock
 * held). On failure q is closed and the error mapped. */
int kms_sq_open(kms_sq *q, struct sqlite_store *s, enum stmt_id id, const kms_sq_param *params,
                size_t n) KMS_MUST_CHECK;
/* The same for sql prepared on db for this one use (migrations). */
int kms_sq_open_once(kms_sq *q, sqlite3 *db, const char *sql, const kms_sq_param *params,
                     size_t n) KMS_MUST_CHECK;

/* Steps: 1 if a row is ready, 0 when done, a negative kms error. */
int kms_sq_step(kms_sq *q) KMS_MUST_CHECK;
/* Steps a statement that returns no row (INSERT, UPDATE, DELETE, BEGIN);
 * *changes (if not NULL) gets the rows it changed. */
int kms_sq_exec(kms_sq *q, int *changes) KMS_MUST_CHECK;
/* Steps to the first row: KMS_ENOTFOUND with detail `missing` if there
 * is none. */
int kms_sq_one(kms_sq *q, const char *missing) KMS_MUST_CHECK;
/* Resets (store statements) or finalizes (once) and clears the bindings.
 * Idempotent. */
void kms_sq_close(kms_sq *q);

/* open + exec + close of the store statement id. */
int kms_sq_run(struct sqlite_store *s, enum stmt_id id, const kms_sq_param *params, size_t n,
               int *changes) KMS_MUST_CHECK;

/* Column readers of the current row: they check the type and range and
 * return KMS_ESTORE with a detail naming `what` otherwise; out is written
 * only on success. */
/* Text of 1..cap-1 bytes into out, NUL-terminated. */
int kms_sq_text(kms_sq *q, int col, char *out, size_t cap, const char *what) KMS_MUST_CHECK;
/* Text of 0..cap-1 bytes (NULL reads as ""). */
int kms_sq_text_or_empty(kms_sq *q, int col, char *out, size_t cap,
                         const char *what) KMS_MUST_CHECK;
/* A 16-byte id blob. */
int kms_sq_id(kms_sq *q, int col, uint8_t *out) KMS_MUST_CHECK;
/* An integer in [min, max]. */
int kms_sq_int(kms_sq *q, int col, sqlite3_int64 min, sqlite3_int64 max, sqlite3_int64 *out,
               const char *what) KMS_MUST_CHECK;
/* A blob of min..cap bytes; NULL counts as 0 bytes (so min 0 allows it). */
int kms_sq_blob(kms_sq *q, int col, size_t min, uint8_t *out, size_t cap, size_t *len,
                const char *what) KMS_MUST_CHECK;

/* Runs a fixed script of one or more statements without parameters (the
 * migrations and the connection's pragmas; never caller input). */
int kms_sq_script(sqlite3 *db, const char *sql, const char *what) KMS_MUST_CHECK;

#endif
