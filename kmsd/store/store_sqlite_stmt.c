/* Every statement the SQLite store runs once it is open, by id
 * (store_sqlite_query.h). States are bound as parameters from the enums
 * in store.h, never written as numbers here. */
#include "kmsd/store/store_sqlite_query.h"

#define KEY_COLUMNS                                                                                \
    "id, name, backend, primary_version, min_decrypt_version, created_at, rotation_period_days, "  \
    "deletion_at"
#define VERSION_COLUMNS "key_id, version, state, created_at, usage_count, backend_ref"
#define ACTION_COLUMNS                                                                             \
    "type, body, digest, proposer, state, threshold, created_at, expires_at, result, plan"

const struct kms_sqlite_sql kms_sqlite_sql[ST_COUNT] = {
    /* keys */
    [ST_KEY_INSERT] = {"key create", "INSERT INTO keys (" KEY_COLUMNS
                                     ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"},
    [ST_KEY_BY_NAME] = {"key lookup", "SELECT " KEY_COLUMNS " FROM keys WHERE name = ?1"},
    [ST_KEY_BY_ID] = {"key lookup", "SELECT " KEY_COLUMNS " FROM keys WHERE id = ?1"},
    [ST_KEY_PAGE] = {"key list",
                     "SELECT " KEY_COLUMNS " FROM keys WHERE name > ?1 ORDER BY name LIMIT ?2"},
    [ST_KEY_EXISTS] = {"key exists", "SELECT 1 FROM keys WHERE id = ?1"},
    [ST_KEY_SET_MIN_DECRYPT] = {"key update",
                                "UPDATE keys SET min_decrypt_version = ?1 WHERE id = ?2"},
    [ST_KEY_SET_ROTATION] = {"key update",
                             "UPDATE keys SET rotation_period_days = ?1 WHERE id = ?2"},
    [ST_KEY_SET_DELETION] = {"key update", "UPDATE keys SET deletion_at = ?1 WHERE id = ?2"},

    /* versions and usage */
    [ST_VERSION_INSERT] = {"version add", "INSERT INTO key_versions (" VERSION_COLUMNS
                                          ") VALUES (?1, ?2, ?3, ?4, ?5, ?6)"},
    [ST_SET_PRIMARY] = {"set primary version",
                        "UPDATE keys SET primary_version = ?1 WHERE id = ?2"},
    [ST_VERSION_GET] = {"version lookup", "SELECT " VERSION_COLUMNS
                                          " FROM key_versions WHERE key_id = ?1 AND version = ?2"},
    [ST_VERSION_PAGE] = {"version list",
                         "SELECT " VERSION_COLUMNS " FROM key_versions"
                         " WHERE key_id = ?1 AND version > ?2 ORDER BY version LIMIT ?3"},
    [ST_VERSION_STATE] = {"version state",
                          "UPDATE key_versions SET state = ?1 WHERE key_id = ?2 AND version = ?3"},
    /* The tombstone overwrites the reference in the same statement. */
    [ST_VERSION_DESTROY] = {"version destroy",
                            "UPDATE key_versions SET state = ?3, backend_ref = x'00'"
                            " WHERE key_id = ?1 AND version = ?2"},
    /* "usage_count + n <= limit", written so that it cannot overflow:
     * 0 <= n, limit <= INT64_MAX, so limit - n never does. */
    [ST_USAGE_ADD] = {"usage reserve",
                      "UPDATE key_versions SET usage_count = usage_count + ?1"
                      " WHERE key_id = ?2 AND version = ?3 AND usage_count <= ?4 - ?1"},
    [ST_USAGE_GET] = {"usage read",
                      "SELECT usage_count FROM key_versions WHERE key_id = ?1 AND version = ?2"},

    /* authorization */
    [ST_POLICY_DELETE] = {"policy set", "DELETE FROM key_policies WHERE key_id = ?1"},
    [ST_POLICY_INSERT] = {"policy set", "INSERT INTO key_policies (key_id, action, identity)"
                                        " VALUES (?1, ?2, ?3)"},
    [ST_POLICY_PAGE] = {"policy list", "SELECT action, identity FROM key_policies"
                                       " WHERE key_id = ?1 AND (action, identity) > (?2, ?3)"
                                       " ORDER BY action, identity LIMIT ?4"},
    [ST_OFFICER_INSERT] = {"officer add",
                           "INSERT INTO officers (id, identity, signing_key_pem, created_at)"
                           " VALUES (?1, ?2, ?3, ?4)"},
    [ST_OFFICER_DELETE] = {"officer remove", "DELETE FROM officers WHERE id = ?1"},
    [ST_OFFICER_PAGE] = {"officer list",
                         "SELECT id, identity, signing_key_pem, created_at FROM officers"
                         " WHERE id > ?1 ORDER BY id LIMIT ?2"},
    [ST_THRESHOLD_SET] =
        {"threshold set",
         "INSERT INTO thresholds (action_type, threshold) VALUES (?1, ?2)"
         " ON CONFLICT (action_type) DO UPDATE SET threshold = excluded.threshold"},
    [ST_THRESHOLD_GET] = {"threshold get",
                          "SELECT threshold FROM thresholds WHERE action_type = ?1"},
    [ST_THRESHOLD_PAGE] = {"threshold list",
                           "SELECT action_type, threshold FROM thresholds"
                           " WHERE action_type > ?1 ORDER BY action_type LIMIT ?2"},
    [ST_AUDITOR_INSERT] = {"auditor add",
                           "INSERT INTO auditors (identity, created_at) VALUES (?1, ?2)"},
    [ST_AUDITOR_DELETE] = {"auditor remove", "DELETE FROM auditors WHERE identity = ?1"},
    [ST_AUDITOR_PAGE] = {"auditor list", "SELECT identity, created_at FROM auditors"
                                         " WHERE identity > ?1 ORDER BY identity LIMIT ?2"},

    /* quorum */
    [ST_INSTANCE_ID] = {"instance id", "SELECT id FROM instance"},
    [ST_ACTION_INSERT] = {"action create",
                          "INSERT INTO actions (id, type, body, digest, proposer, state,"
                          " threshold, created_at, expires_at, result)"
                          " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"},
    [ST_ACTION_GET] = {"action get", "SELECT " ACTION_COLUMNS " FROM actions WHERE id = ?1"},
    /* Only approvals of officers still enrolled count. */
    [ST_ACTION_APPROVALS] = {"approvals",
                             "SELECT a.officer_id, a.approved_at, a.signature FROM approvals a"
                             " JOIN officers o ON o.id = a.officer_id"
                             " WHERE a.action_id = ?1 ORDER BY a.approved_at, a.officer_id"},
    [ST_ACTION_IDS_PENDING] = {"action list", "SELECT id FROM actions WHERE state IN (?2, ?3)"
                                              " ORDER BY created_at DESC, id LIMIT ?1"},
    [ST_ACTION_IDS_ALL] = {"action list",
                           "SELECT id FROM actions ORDER BY created_at DESC, id LIMIT ?1"},
    /* Moves one action from state ?3 to state ?2 (expire, start, cancel). */
    [ST_ACTION_MOVE] = {"action state",
                        "UPDATE actions SET state = ?2 WHERE id = ?1 AND state = ?3"},
    [ST_ACTION_APPROVAL_INSERT] = {"approval",
                                   "INSERT INTO approvals (action_id, officer_id, signature,"
                                   " approved_at) VALUES (?1, ?2, ?3, ?4)"},
    [ST_ACTION_SET_PLAN] = {"action plan",
                            "UPDATE actions SET plan = ?2 WHERE id = ?1 AND state = ?3"},
    [ST_ACTION_FINISH] = {"action finish", "UPDATE actions SET state = ?2, result = ?3"
                                           " WHERE id = ?1 AND state = ?4"},
    [ST_ACTION_EXPIRE_DUE] = {"action expiry", "UPDATE actions SET state = ?2"
                                               " WHERE state = ?3 AND expires_at <= ?1"},
    [ST_ACTION_COUNT_PENDING] = {"pending action count",
                                 "SELECT count(*) FROM actions"
                                 " WHERE state = ?3 AND proposer = ?1 AND expires_at > ?2"},

    /* transactions: BEGIN IMMEDIATE takes the write lock now, so a
     * transaction never fails half-way because another writer got in
     * first. */
    [ST_BEGIN] = {"begin", "BEGIN IMMEDIATE"},
    [ST_COMMIT] = {"commit", "COMMIT"},
    [ST_ROLLBACK] = {"rollback", "ROLLBACK"},
};
