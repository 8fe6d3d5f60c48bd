/* The SQLite store's schema (contract: store.h; design notes:
 * docs/storage.md): the migrations, in order, never changed once released,
 * and the opening of a connection: file mode, pragmas checked to have
 * taken, and the migration run (each step in its own transaction with the
 * version bump). */
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "kmsd/store/store.h"
#include "kmsd/store/store_sqlite_internal.h"
#include "kmsd/store/store_sqlite_query.h"

#define BUSY_TIMEOUT_MS 5000

/* The migrations below spell these limits out as literals, because a
 * migration must never change once released. Changing a limit means a new
 * migration, and these asserts are the reminder. */
_Static_assert(KMS_KEY_ID_LEN == 16, "migration 1 fixes key ids at 16 bytes");
_Static_assert(KMS_KEY_NAME_MAX == 128, "migration 1 fixes key names at 128 bytes");
_Static_assert(KMS_BACKEND_REF_MAX == 2048, "migration 1 fixes backend refs at 2048 bytes");
_Static_assert(sizeof(((kms_key_rec *)0)->backend) == BACKEND_NAME_MAX + 1,
               "migration 1 fixes backend names at 15 bytes");
_Static_assert(KMS_IDENTITY_MAX == 1024, "migration 2 fixes identities at 1024 bytes");
_Static_assert(KMS_OFFICER_ID_MAX == 64, "migration 2 fixes officer ids at 64 bytes");
_Static_assert(KMS_SIGNING_KEY_PEM_MAX == 1024, "migration 2 fixes signing keys at 1024 bytes");
_Static_assert(KMS_ACTION_TYPE_MAX == 64, "migration 2 fixes action type names at 64 bytes");
_Static_assert(KMS_THRESHOLD_MIN == 2, "migration 2 fixes the smallest threshold at 2");
_Static_assert(KMS_ACTION_ENCRYPT == 1 && KMS_ACTION_REENCRYPT == 3,
               "migration 2 fixes policy actions at 1..3");
_Static_assert(KMS_ACTION_BYTES_MAX == 16384 && KMS_ACTION_RESULT_MAX == 256 &&
                   KMS_ACTION_PLAN_MAX == 64 && KMS_SIGNATURE_MAX == 256,
               "migration 3 fixes action sizes");
_Static_assert(KMS_VERSION_ENABLED == 1 && KMS_VERSION_DISABLED == 2 &&
                   KMS_VERSION_PENDING_DELETION == 3 && KMS_VERSION_DESTROYED == 4,
               "migration 1 fixes version states at 1..4");
_Static_assert(KMS_ACTION_PENDING == 1 && KMS_ACTION_EXECUTED == 2 && KMS_ACTION_CANCELLED == 3 &&
                   KMS_ACTION_EXPIRED == 4 && KMS_ACTION_FAILED == 5 && KMS_ACTION_EXECUTING == 6,
               "migration 3 fixes action states at 1..6");

/* Created, together with the first migration, in a file that has no tables
 * yet. A single row; kms_store_sqlite_open refuses a file with any other
 * number of rows. */
static const char schema_version_table[] =
    "CREATE TABLE schema_version ("
    "  version INTEGER NOT NULL CHECK (typeof(version) = 'integer' AND version >= 0));"
    "INSERT INTO schema_version (version) VALUES (0);";

/* One schema step: a description for the log and an SQL script. */
struct migration {
    const char *what;
    const char *sql;
};

/* migrations[i] takes the schema from version i to i + 1. Append, never
 * edit or reorder: a released step has already run on someone's file.
 * Lengths are in bytes (CAST AS BLOB), as the C buffers are. */
static const struct migration migrations[] = {
    /* 0 -> 1 */
    {"keys and their versions",
     "CREATE TABLE keys ("
     "  id BLOB NOT NULL PRIMARY KEY"
     "    CHECK (typeof(id) = 'blob' AND length(id) = 16),"
     "  name TEXT NOT NULL UNIQUE"
     "    CHECK (typeof(name) = 'text' AND length(CAST(name AS BLOB)) BETWEEN 1 AND 128),"
     "  backend TEXT NOT NULL"
     "    CHECK (typeof(backend) = 'text' AND length(CAST(backend AS BLOB)) BETWEEN 1 AND 15),"
     "  primary_version INTEGER NOT NULL DEFAULT 0"
     "    CHECK (typeof(primary_version) = 'integer'"
     "           AND primary_version BETWEEN 0 AND 4294967295),"
     "  min_decrypt_version INTEGER NOT NULL DEFAULT 1"
     "    CHECK (typeof(min_decrypt_version) = 'integer'"
     "           AND min_decrypt_version BETWEEN 1 AND 4294967295),"
     "  created_at INTEGER NOT NULL CHECK (typeof(created_at) = 'integer')"
     ");"
     "CREATE TABLE key_versions ("
     "  key_id BLOB NOT NULL REFERENCES keys(id),"
     "  version INTEGER NOT NULL"
     "    CHECK (typeof(version) = 'integer' AND version BETWEEN 1 AND 4294967295),"
     "  state INTEGER NOT NULL CHECK (typeof(state) = 'integer' AND state BETWEEN 1 AND 4),"
     "  created_at INTEGER NOT NULL CHECK (typeof(created_at) = 'integer'),"
     "  usage_count INTEGER NOT NULL DEFAULT 0"
     "    CHECK (typeof(usage_count) = 'integer' AND usage_count >= 0),"
     "  backend_ref BLOB NOT NULL"
     "    CHECK (typeof(backend_ref) = 'blob' AND length(backend_ref) BETWEEN 1 AND 2048),"
     "  PRIMARY KEY (key_id, version)"
     ");"},
    /* 1 -> 2 */
    {"key policies, officers and approval thresholds",
     "CREATE TABLE key_policies ("
     "  key_id BLOB NOT NULL REFERENCES keys(id)"
     "    CHECK (typeof(key_id) = 'blob' AND length(key_id) = 16),"
     "  action INTEGER NOT NULL CHECK (typeof(action) = 'integer' AND action BETWEEN 1 AND 3),"
     "  identity TEXT NOT NULL"
     "    CHECK (typeof(identity) = 'text' AND length(CAST(identity AS BLOB)) BETWEEN 1 AND 1024),"
     "  PRIMARY KEY (key_id, action, identity)"
     ");"
     "CREATE TABLE officers ("
     "  id TEXT NOT NULL PRIMARY KEY"
     "    CHECK (typeof(id) = 'text' AND length(CAST(id AS BLOB)) BETWEEN 1 AND 64),"
     "  identity TEXT NOT NULL UNIQUE"
     "    CHECK (typeof(identity) = 'text' AND length(CAST(identity AS BLOB)) BETWEEN 1 AND 1024),"
     "  signing_key_pem TEXT NOT NULL"
     "    CHECK (typeof(signing_key_pem) = 'text'"
     "           AND length(CAST(signing_key_pem AS BLOB)) BETWEEN 1 AND 1024),"
     "  created_at INTEGER NOT NULL CHECK (typeof(created_at) = 'integer')"
     ");"
     "CREATE TABLE thresholds ("
     "  action_type TEXT NOT NULL PRIMARY KEY"
     "    CHECK (typeof(action_type) = 'text'"
     "           AND length(CAST(action_type AS BLOB)) BETWEEN 1 AND 64),"
     "  threshold INTEGER NOT NULL"
     "    CHECK (typeof(threshold) = 'integer' AND threshold BETWEEN 2 AND 4294967295)"
     ");"},
    /* 2 -> 3 */
    {"key lifecycle settings, instance id, quorum actions and approvals",
     "ALTER TABLE keys ADD COLUMN rotation_period_days INTEGER NOT NULL DEFAULT 0"
     "  CHECK (typeof(rotation_period_days) = 'integer'"
     "         AND rotation_period_days BETWEEN 0 AND 36500);"
     "ALTER TABLE keys ADD COLUMN deletion_at INTEGER NOT NULL DEFAULT 0"
     "  CHECK (typeof(deletion_at) = 'integer' AND deletion_at >= 0);"
     "CREATE TABLE instance ("
     "  id BLOB NOT NULL CHECK (typeof(id) = 'blob' AND length(id) = 16)"
     ");"
     "INSERT INTO instance (id) VALUES (randomblob(16));"
     "CREATE TABLE actions ("
     "  id BLOB NOT NULL PRIMARY KEY CHECK (typeof(id) = 'blob' AND length(id) = 16),"
     "  type TEXT NOT NULL"
     "    CHECK (typeof(type) = 'text' AND length(CAST(type AS BLOB)) BETWEEN 1 AND 64),"
     "  body BLOB NOT NULL"
     "    CHECK (typeof(body) = 'blob' AND length(body) BETWEEN 1 AND 16384),"
     "  digest BLOB NOT NULL CHECK (typeof(digest) = 'blob' AND length(digest) = 32),"
     "  proposer TEXT NOT NULL"
     "    CHECK (typeof(proposer) = 'text' AND length(CAST(proposer AS BLOB)) BETWEEN 1 AND 64),"
     "  state INTEGER NOT NULL CHECK (typeof(state) = 'integer' AND state BETWEEN 1 AND 6),"
     "  threshold INTEGER NOT NULL"
     "    CHECK (typeof(threshold) = 'integer' AND threshold BETWEEN 0 AND 4294967295"
     "           AND (threshold >= 2 OR proposer = 'kmsd')),"
     "  created_at INTEGER NOT NULL CHECK (typeof(created_at) = 'integer'),"
     "  expires_at INTEGER NOT NULL CHECK (typeof(expires_at) = 'integer'),"
     "  result TEXT NOT NULL DEFAULT ''"
     "    CHECK (typeof(result) = 'text' AND length(CAST(result AS BLOB)) <= 256),"
     "  plan BLOB CHECK (plan IS NULL OR (typeof(plan) = 'blob' AND length(plan) <= 64))"
     ");"
     "CREATE INDEX actions_by_time ON actions (created_at);"
     "CREATE TABLE approvals ("
     "  action_id BLOB NOT NULL REFERENCES actions(id),"
     "  officer_id TEXT NOT NULL"
     "    CHECK (typeof(officer_id) = 'text'"
     "           AND length(CAST(officer_id AS BLOB)) BETWEEN 1 AND 64),"
     "  signature BLOB NOT NULL"
     "    CHECK (typeof(signature) = 'blob' AND length(signature) BETWEEN 1 AND 256),"
     "  approved_at INTEGER NOT NULL CHECK (typeof(approved_at) = 'integer'),"
     "  PRIMARY KEY (action_id, officer_id)"
     ");"},
    /* 3 -> 4: a row MAC under the state-integrity key on every row of the
     * security state (NULL until sealed), and the state digest: one row
     * with the generation, the digest over every row MAC and its own MAC
     * (docs/storage.md, "State integrity"). */
    {"row MACs and the state digest",
     "ALTER TABLE keys ADD COLUMN mac BLOB"
     "  CHECK (mac IS NULL OR (typeof(mac) = 'blob' AND length(mac) = 32));"
     "ALTER TABLE key_versions ADD COLUMN mac BLOB"
     "  CHECK (mac IS NULL OR (typeof(mac) = 'blob' AND length(mac) = 32));"
     "ALTER TABLE key_policies ADD COLUMN mac BLOB"
     "  CHECK (mac IS NULL OR (typeof(mac) = 'blob' AND length(mac) = 32));"
     "ALTER TABLE officers ADD COLUMN mac BLOB"
     "  CHECK (mac IS NULL OR (typeof(mac) = 'blob' AND length(mac) = 32));"
     "ALTER TABLE thresholds ADD COLUMN mac BLOB"
     "  CHECK (mac IS NULL OR (typeof(mac) = 'blob' AND length(mac) = 32));"
     "ALTER TABLE instance ADD COLUMN mac BLOB"
     "  CHECK (mac IS NULL OR (typeof(mac) = 'blob' AND length(mac) = 32));"
     "ALTER TABLE actions ADD COLUMN mac BLOB"
     "  CHECK (mac IS NULL OR (typeof(mac) = 'blob' AND length(mac) = 32));"
     "ALTER TABLE approvals ADD COLUMN mac BLOB"
     "  CHECK (mac IS NULL OR (typeof(mac) = 'blob' AND length(mac) = 32));"
     "CREATE TABLE state_digest ("
     "  id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),"
     "  generation INTEGER NOT NULL"
     "    CHECK (typeof(generation) = 'integer' AND generation >= 1),"
     "  digest BLOB NOT NULL CHECK (typeof(digest) = 'blob' AND length(digest) = 32),"
     "  mac BLOB NOT NULL CHECK (typeof(mac) = 'blob' AND length(mac) = 32)"
     ");"},
    /* 4 -> 5: the auditors, who may read the audit log and nothing else
     * (docs/audit.md, "Auditors"). Their rows carry a MAC like the rest of
     * the security state (store_sqlite_mac.c). */
    {"auditors",
     "CREATE TABLE auditors ("
     "  identity TEXT NOT NULL PRIMARY KEY"
     "    CHECK (typeof(identity) = 'text' AND length(CAST(identity AS BLOB)) BETWEEN 1 AND 1024),"
     "  created_at INTEGER NOT NULL CHECK (typeof(created_at) = 'integer'),"
     "  mac BLOB CHECK (mac IS NULL OR (typeof(mac) = 'blob' AND length(mac) = 32))"
     ");"},
};

#define SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

/* ---- opening a connection ------------------------------------------------------- */

/* Opening failures are KMS_ESTORE whatever SQLite said (busy included):
 * kms_store_sqlite_open promises that; the detail is kept. */
static int open_error(int r)
{
    if (r == 0 || r == KMS_ESTORE)
        return r;
    struct kms_sqlite_detail d;
    kms_sqlite_detail_save(&d);
    return kms_sqlite_detail_restore(&d, KMS_ESTORE);
}

/* Runs a one-shot query that must yield exactly one row whose first column
 * is an integer. */
static int query_int(sqlite3 *db, const char *sql, sqlite3_int64 *out)
{
    kms_sq q;
    int r;

    if ((r = kms_sq_open_once(&q, db, sql, KMS_SQ_NO_ARGS)) != 0)
        goto out;
    if ((r = kms_sq_one(&q, sql)) != 0) {
        if (r == KMS_ENOTFOUND)
            r = kms_error_set(KMS_ESTORE, "%s: no row", sql);
        goto out;
    }
    if ((r = kms_sq_int(&q, 0, INT64_MIN, INT64_MAX, out, sql)) != 0)
        goto out;
    if ((r = kms_sq_step(&q)) != 0)
        r = r < 0 ? r : kms_error_set(KMS_ESTORE, "%s: more than one row", sql);
out:
    kms_sq_close(&q);
    return open_error(r);
}

/* Sets the connection up and checks that each setting took: SQLite ignores
 * what it cannot do (journal_mode stays "delete" where WAL is impossible,
 * foreign_keys is silently absent from some builds) and durability is the
 * point. Also the first read of the file, so a file that is not a database
 * fails here. */
int kms_sqlite_configure(sqlite3 *db)
{
    kms_sq q = {0};
    sqlite3_int64 v = 0;
    char mode[16];
    int r, rc;

    if ((rc = sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS)) != SQLITE_OK) {
        r = kms_error_set(KMS_ESTORE, "busy timeout: %s", sqlite3_errmsg(db));
        goto out;
    }
    /* trusted_schema=OFF: triggers and views in the file may not call
     * functions with side effects (defence against an edited file).
     * secure_delete: freed pages are zeroed, so removed backend references
     * do not linger in the file. */
    if ((r = kms_sq_script(db, "PRAGMA trusted_schema=OFF; PRAGMA secure_delete=ON;",
                           "settings")) != 0)
        goto out;
    if ((r = kms_sq_open_once(&q, db, "PRAGMA journal_mode=WAL", KMS_SQ_NO_ARGS)) != 0 ||
        (r = kms_sq_one(&q, "journal_mode=WAL: no answer")) != 0)
        goto out;
    if (kms_sq_text(&q, 0, mode, sizeof(mode), "journal mode") != 0 ||
        sqlite3_stricmp(mode, "wal") != 0) {
        r = kms_error_set(KMS_ESTORE, "journal_mode=WAL refused");
        goto out;
    }
    if ((r = kms_sq_script(db, "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;", "settings")) !=
            0 ||
        (r = query_int(db, "PRAGMA synchronous", &v)) != 0)
        goto out;
    if (v != 2) {
        r = kms_error_set(KMS_ESTORE, "synchronous=FULL refused (%lld)", (long long)v);
        goto out;
    }
    if ((r = query_int(db, "PRAGMA foreign_keys", &v)) != 0)
        goto out;
    if (v != 1) {
        r = kms_error_set(KMS_ESTORE, "foreign_keys=ON refused (%lld)", (long long)v);
        goto out;
    }
out:
    kms_sq_close(&q);
    return open_error(r);
}

/* Schema version of the file, read inside the migration transaction. A
 * file without tables is version 0 (*fresh set: schema_version must be
 * created); a file with tables but no schema_version is not ours. */
static int read_schema_version(sqlite3 *db, int *version, int *fresh)
{
    sqlite3_int64 n = 0, v = 0;
    int r;

    if ((r = query_int(db,
                       "SELECT count(*) FROM sqlite_master"
                       " WHERE type = 'table' AND name = 'schema_version'",
                       &n)) != 0)
        goto out;
    if (n == 0) {
        if ((r = query_int(db, "SELECT count(*) FROM sqlite_master", &n)) != 0)
            goto out;
        if (n != 0) {
            r = kms_error_set(KMS_ESTORE, "not a kms store: tables but no schema_version");
            goto out;
        }
        *version = 0;
        *fresh = 1;
        goto out;
    }
    /* query_int refuses zero or several rows. */
    if ((r = query_int(db, "SELECT version FROM schema_version", &v)) != 0)
        goto out;
    if (v < 0 || v > INT32_MAX) {
        r = kms_error_set(KMS_ESTORE, "schema version %lld is invalid", (long long)v);
        goto out;
    }
    *version = (int)v;
    *fresh = 0;
out:
    return r;
}

static int bump_schema_version(sqlite3 *db, int from)
{
    kms_sq q;
    int r, changes = 0;

    if ((r = kms_sq_open_once(&q, db, "UPDATE schema_version SET version = ?1 WHERE version = ?2",
                              KMS_SQ_ARGS(KMS_SQ_INT(from + 1), KMS_SQ_INT(from)))) != 0 ||
        (r = kms_sq_exec(&q, &changes)) != 0)
        goto out;
    if (changes != 1)
        r = kms_error_set(KMS_ESTORE, "schema version update: row missing");
out:
    kms_sq_close(&q);
    return open_error(r);
}

/* One transaction: reads the version and, if it is behind, applies the next
 * step and bumps the version. The version is read under the write lock, so
 * two processes opening one new file do not both migrate it. *version is
 * the version after the call. */
static int migrate_step(sqlite3 *db, int *version)
{
    int v = 0, fresh = 0, r;

    if ((r = kms_sq_script(db, "BEGIN IMMEDIATE", "migration")) != 0)
        goto out;
    if ((r = read_schema_version(db, &v, &fresh)) != 0)
        goto out;
    if (v > SCHEMA_VERSION) {
        r = kms_error_set(KMS_EUNSUPPORTED,
                          "database schema version %d is newer than this build knows (%d)", v,
                          SCHEMA_VERSION);
        goto out;
    }
    if (v < SCHEMA_VERSION) {
        if (fresh && (r = kms_sq_script(db, schema_version_table, "migration to 1")) != 0)
            goto out;
        if ((r = kms_sq_script(db, migrations[v].sql, migrations[v].what)) != 0 ||
            (r = bump_schema_version(db, v)) != 0)
            goto out;
    }
    r = kms_sq_script(db, "COMMIT", "migration commit");
out:
    if (r != 0 && !sqlite3_get_autocommit(db)) {
        struct kms_sqlite_detail d;
        kms_sqlite_detail_save(&d);
        if (kms_sq_script(db, "ROLLBACK", "migration rollback") != 0)
            kms_log_error("store: %s", kms_error_detail());
        r = kms_sqlite_detail_restore(&d, r);
    }
    if (r == 0 && v < SCHEMA_VERSION) {
        kms_log_info("store: schema migrated from version %d to %d (%s)", v, v + 1,
                     migrations[v].what);
        v++;
    }
    if (r == 0)
        *version = v;
    return r;
}

int kms_sqlite_migrate(sqlite3 *db)
{
    int version = -1, r;
    do {
        if ((r = migrate_step(db, &version)) != 0)
            return r;
    } while (version < SCHEMA_VERSION);
    return KMS_OK;
}

/* Creates the file (if absent) with mode 0600 before SQLite sees it:
 * SQLite gives the -wal and -shm files the mode of the database file. Not
 * umask(), which is process-wide and would race with other threads. */
int kms_sqlite_create_private(const char *path)
{
    char msg[128];
    struct stat sb;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0)
        return kms_error_set(KMS_ESTORE, "cannot open database %s: %s", path,
                             strerror_r(errno, msg, sizeof(msg)));
    if (fstat(fd, &sb) == 0 && (sb.st_mode & 077) != 0)
        kms_log_warn("store: %s is readable or writable by others (mode %03o)", path,
                     (unsigned)(sb.st_mode & 0777));
    close(fd);
    return KMS_OK;
}

int kms_store_sqlite_schema_version(void)
{
    return SCHEMA_VERSION;
}
