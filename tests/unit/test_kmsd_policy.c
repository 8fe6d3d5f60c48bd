/* Authorization over a real SQLite store: grants per action, officers
 * without data-plane rights, describe rights, unknown keys, cache
 * invalidation and officer reloads. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_util.h"
#include "kmsd/policy/policy.h"

struct fx {
    char dir[256];
    char db[320];
    kms_store *s;
    kms_policy *p;
    kms_key_rec demo;
};

static kms_key_rec make_key(kms_store *s, const char *name, uint8_t idbyte)
{
    kms_key_rec k;
    memset(&k, 0, sizeof(k));
    memset(k.id, idbyte, sizeof(k.id));
    snprintf(k.name, sizeof(k.name), "%s", name);
    snprintf(k.backend, sizeof(k.backend), "pkcs11");
    k.min_decrypt_version = 1;
    assert_int_equal(s->ops->key_create(s, &k), KMS_OK);
    return k;
}

static void add_officer(kms_store *s, const char *id, const char *identity)
{
    kms_officer_rec o;
    memset(&o, 0, sizeof(o));
    snprintf(o.id, sizeof(o.id), "%s", id);
    snprintf(o.identity, sizeof(o.identity), "%s", identity);
    snprintf(o.signing_key_pem, sizeof(o.signing_key_pem), "pem");
    assert_int_equal(s->ops->officer_add(s, &o), KMS_OK);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    kms_test_tmpdir("kms-policy", f->dir, sizeof(f->dir));
    kms_test_path(f->db, sizeof(f->db), f->dir, "kms.db");
    assert_int_equal(kms_store_sqlite_open(f->db, &f->s), KMS_OK);
    f->demo = make_key(f->s, "demo", 1);
    const kms_grant_rec g[] = {{KMS_ACTION_ENCRYPT, "app"},
                               {KMS_ACTION_DECRYPT, "app"},
                               {KMS_ACTION_DECRYPT, "backup"},
                               {KMS_ACTION_REENCRYPT, "rotator"},
                               /* an officer listed anyway: still no rights */
                               {KMS_ACTION_DECRYPT, "officer-1"}};
    assert_int_equal(f->s->ops->policy_set(f->s, f->demo.id, g, 5), KMS_OK);
    add_officer(f->s, "o1", "officer-1");
    add_officer(f->s, "o2", "officer-2");
    assert_int_equal(kms_policy_open(f->s, &f->p), KMS_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    kms_policy_close(f->p);
    f->s->ops->close(f->s);
    kms_test_rmtree(f->dir);
    free(f);
    return 0;
}

static void grants_per_action(void **state)
{
    struct fx *f = *state;
    kms_key_rec rec;
    memset(&rec, 0, sizeof(rec));
    assert_int_equal(kms_policy_check(f->p, "app", "demo", NULL, KMS_PERM_ENCRYPT, &rec), KMS_OK);
    assert_string_equal(rec.name, "demo");
    assert_memory_equal(rec.id, f->demo.id, KMS_KEY_ID_LEN);
    assert_int_equal(kms_policy_check(f->p, "app", NULL, f->demo.id, KMS_PERM_DECRYPT, NULL),
                     KMS_OK);
    assert_int_equal(kms_policy_check(f->p, "app", "demo", NULL, KMS_PERM_REENCRYPT, NULL),
                     KMS_EDENIED);
    assert_int_equal(kms_policy_check(f->p, "backup", "demo", NULL, KMS_PERM_DECRYPT, NULL),
                     KMS_OK);
    assert_int_equal(kms_policy_check(f->p, "backup", "demo", NULL, KMS_PERM_ENCRYPT, NULL),
                     KMS_EDENIED);
    assert_int_equal(kms_policy_check(f->p, "rotator", "demo", NULL, KMS_PERM_REENCRYPT, NULL),
                     KMS_OK);
    /* Identities compare byte for byte. */
    assert_int_equal(kms_policy_check(f->p, "App", "demo", NULL, KMS_PERM_ENCRYPT, NULL),
                     KMS_EDENIED);
    assert_int_equal(kms_policy_check(f->p, "app ", "demo", NULL, KMS_PERM_ENCRYPT, NULL),
                     KMS_EDENIED);
    assert_int_equal(kms_policy_check(f->p, "", "demo", NULL, KMS_PERM_ENCRYPT, NULL), KMS_EDENIED);
}

static void officers_have_no_data_plane_rights(void **state)
{
    struct fx *f = *state;
    assert_true(kms_policy_is_officer(f->p, "officer-1"));
    assert_false(kms_policy_is_officer(f->p, "app"));
    /* officer-1 is in demo's decrypt list, and is refused all the same. */
    assert_int_equal(kms_policy_check(f->p, "officer-1", "demo", NULL, KMS_PERM_DECRYPT, NULL),
                     KMS_EDENIED);
    assert_int_equal(kms_policy_check(f->p, "officer-2", "demo", NULL, KMS_PERM_ENCRYPT, NULL),
                     KMS_EDENIED);
    /* Officers may describe any key; others only keys that name them. */
    assert_int_equal(kms_policy_check(f->p, "officer-2", "demo", NULL, KMS_PERM_DESCRIBE, NULL),
                     KMS_OK);
    assert_int_equal(kms_policy_check(f->p, "rotator", "demo", NULL, KMS_PERM_DESCRIBE, NULL),
                     KMS_OK);
    assert_int_equal(kms_policy_check(f->p, "stranger", "demo", NULL, KMS_PERM_DESCRIBE, NULL),
                     KMS_EDENIED);
}

/* A key that does not exist gets the answer of a key the caller has no
 * rights on (KMS_EDENIED), for every key permission, by name or by id, so
 * key names cannot be probed; only an officer describing it learns it does
 * not exist (officers may list every key). */
static void unknown_keys_and_bad_arguments(void **state)
{
    struct fx *f = *state;
    uint8_t other[KMS_KEY_ID_LEN];
    memset(other, 0x55, sizeof(other));
    const kms_perm perms[] = {KMS_PERM_ENCRYPT, KMS_PERM_DECRYPT, KMS_PERM_REENCRYPT,
                              KMS_PERM_DESCRIBE};
    char longname[KMS_KEY_NAME_MAX + 8];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    for (size_t i = 0; i < 4; i++) {
        /* "stranger" has no rights on demo: the same answer as no key. */
        assert_int_equal(kms_policy_check(f->p, "stranger", "demo", NULL, perms[i], NULL),
                         KMS_EDENIED);
        assert_int_equal(kms_policy_check(f->p, "app", "nope", NULL, perms[i], NULL), KMS_EDENIED);
        assert_int_equal(kms_policy_check(f->p, "app", NULL, other, perms[i], NULL), KMS_EDENIED);
        assert_int_equal(kms_policy_check(f->p, "app", "", NULL, perms[i], NULL), KMS_EDENIED);
        assert_int_equal(kms_policy_check(f->p, "app", longname, NULL, perms[i], NULL),
                         KMS_EDENIED);
    }
    assert_int_equal(kms_policy_check(f->p, "officer-1", "nope", NULL, KMS_PERM_DESCRIBE, NULL),
                     KMS_ENOTFOUND);
    assert_int_equal(kms_policy_check(f->p, "officer-1", NULL, other, KMS_PERM_DESCRIBE, NULL),
                     KMS_ENOTFOUND);
    assert_int_equal(kms_policy_check(f->p, "officer-1", "nope", NULL, KMS_PERM_DECRYPT, NULL),
                     KMS_EDENIED);
    assert_int_equal(kms_policy_check(f->p, "app", "demo", NULL, KMS_PERM_OFFICER, NULL),
                     KMS_EINVAL);
    assert_int_equal(kms_policy_check(f->p, NULL, "demo", NULL, KMS_PERM_ENCRYPT, NULL),
                     KMS_EINVAL);
    assert_int_equal(kms_policy_check(f->p, "app", NULL, NULL, KMS_PERM_ENCRYPT, NULL), KMS_EINVAL);
    kms_key_policy kp;
    assert_int_equal(kms_policy_get(f->p, other, &kp), KMS_ENOTFOUND);
    assert_string_equal(kms_policy_perm_name(KMS_PERM_REENCRYPT), "reencrypt");
    assert_string_equal(kms_policy_perm_name((kms_perm)99), "?");
}

static void cache_invalidation_and_reload(void **state)
{
    struct fx *f = *state;
    assert_int_equal(kms_policy_check(f->p, "app", "demo", NULL, KMS_PERM_ENCRYPT, NULL), KMS_OK);
    /* A policy change in the store is seen after invalidation, not before. */
    const kms_grant_rec g[] = {{KMS_ACTION_ENCRYPT, "newapp"}};
    assert_int_equal(f->s->ops->policy_set(f->s, f->demo.id, g, 1), KMS_OK);
    assert_int_equal(kms_policy_check(f->p, "app", "demo", NULL, KMS_PERM_ENCRYPT, NULL), KMS_OK);
    kms_policy_invalidate(f->p, f->demo.id);
    assert_int_equal(kms_policy_check(f->p, "app", "demo", NULL, KMS_PERM_ENCRYPT, NULL),
                     KMS_EDENIED);
    assert_int_equal(kms_policy_check(f->p, "newapp", NULL, f->demo.id, KMS_PERM_ENCRYPT, NULL),
                     KMS_OK);
    kms_key_policy kp;
    assert_int_equal(kms_policy_get(f->p, f->demo.id, &kp), KMS_OK);
    assert_int_equal(kp.n[0], 1);
    assert_string_equal(kp.ids[0][0], "newapp");
    assert_int_equal(kp.n[1] + kp.n[2], 0);
    assert_true(kms_policy_allows(&kp, KMS_ACTION_ENCRYPT, "newapp"));
    assert_false(kms_policy_allows(&kp, (kms_key_action)7, "newapp"));
    assert_true(kms_policy_names(&kp, "newapp"));
    kms_policy_clear(&kp);
    kms_policy_clear(&kp);

    /* A new officer counts after a reload. */
    add_officer(f->s, "o3", "newapp");
    assert_int_equal(kms_policy_check(f->p, "newapp", "demo", NULL, KMS_PERM_ENCRYPT, NULL),
                     KMS_OK);
    assert_int_equal(kms_policy_reload_officers(f->p), KMS_OK);
    assert_int_equal(kms_policy_check(f->p, "newapp", "demo", NULL, KMS_PERM_ENCRYPT, NULL),
                     KMS_EDENIED);
    kms_policy_invalidate(f->p, f->demo.id); /* twice, and for unknown keys: harmless */
    kms_policy_invalidate(f->p, f->demo.id);
}

struct racer {
    kms_policy *p;
    const uint8_t *id;
    int bad;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    for (int i = 0; i < 2000; i++) {
        if (kms_policy_check(r->p, "app", i % 2 ? "demo" : NULL, r->id, KMS_PERM_DECRYPT, NULL) !=
            KMS_OK)
            r->bad++;
        if (i % 100 == 0)
            kms_policy_invalidate(r->p, r->id);
    }
    return NULL;
}

static void concurrent_checks(void **state)
{
    struct fx *f = *state;
    pthread_t t[8];
    struct racer r[8];
    for (int i = 0; i < 8; i++) {
        r[i] = (struct racer){f->p, f->demo.id, 0};
        assert_int_equal(pthread_create(&t[i], NULL, race, &r[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(r[i].bad, 0);
    }
}

/* ---- a load racing an invalidation ------------------------------------------------------- */

/* A store shim over the real store: its policy_list, once armed, reads the
 * real store and then blocks until the test lets it go, so that a change
 * and its invalidation run between a cache miss's store read and its
 * insert. Every other op is the real store's (the shim shares its impl). */
struct shim {
    kms_store base; /* first: the ops get &base */
    kms_store_ops ops;
    const kms_store_ops *real;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int armed, blocked, go;
};

static int shim_policy_list(kms_store *s, const uint8_t key_id[KMS_KEY_ID_LEN],
                            kms_store_grant_cb cb, void *ctx)
{
    struct shim *sh = (struct shim *)s;
    int r = sh->real->policy_list(s, key_id, cb, ctx);
    pthread_mutex_lock(&sh->mu);
    if (sh->armed) {
        sh->armed = 0;
        sh->blocked = 1;
        pthread_cond_broadcast(&sh->cv);
        while (!sh->go)
            pthread_cond_wait(&sh->cv, &sh->mu);
    }
    pthread_mutex_unlock(&sh->mu);
    return r;
}

struct miss {
    kms_policy *p;
    int r;
};

static void *check_app_encrypt(void *arg)
{
    struct miss *m = arg;
    m->r = kms_policy_check(m->p, "app", "demo", NULL, KMS_PERM_ENCRYPT, NULL);
    return NULL;
}

/* app's encrypt grant is revoked (store write, then invalidation) while a
 * cache miss holds the store's answer from before: the entry it read must
 * not be cached, and the next check sees the revocation. */
static void revocation_during_a_load_is_not_lost(void **state)
{
    struct fx *f = *state;
    struct shim sh;
    memset(&sh, 0, sizeof(sh));
    sh.real = f->s->ops;
    sh.ops = *f->s->ops;
    sh.ops.policy_list = shim_policy_list;
    sh.base.ops = &sh.ops;
    sh.base.impl = f->s->impl;
    pthread_mutex_init(&sh.mu, NULL);
    pthread_cond_init(&sh.cv, NULL);
    kms_policy *p = NULL;
    assert_int_equal(kms_policy_open(&sh.base, &p), KMS_OK);

    sh.armed = 1;
    struct miss m = {p, -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, check_app_encrypt, &m), 0);
    pthread_mutex_lock(&sh.mu);
    while (!sh.blocked)
        pthread_cond_wait(&sh.cv, &sh.mu);
    pthread_mutex_unlock(&sh.mu);

    /* The load has read app's grant; now it is revoked. */
    const kms_grant_rec g[] = {{KMS_ACTION_DECRYPT, "app"}, {KMS_ACTION_DECRYPT, "backup"}};
    assert_int_equal(f->s->ops->policy_set(f->s, f->demo.id, g, 2), KMS_OK);
    kms_policy_invalidate(p, f->demo.id);

    pthread_mutex_lock(&sh.mu);
    sh.go = 1;
    pthread_cond_broadcast(&sh.cv);
    pthread_mutex_unlock(&sh.mu);
    assert_int_equal(pthread_join(t, NULL), 0);
    /* The racing call itself may answer either way (it began before the
     * revocation); every later one must see it. */
    assert_true(m.r == KMS_OK || m.r == KMS_EDENIED);
    assert_int_equal(kms_policy_check(p, "app", "demo", NULL, KMS_PERM_ENCRYPT, NULL), KMS_EDENIED);
    assert_int_equal(kms_policy_check(p, "app", "demo", NULL, KMS_PERM_DECRYPT, NULL), KMS_OK);
    kms_policy_close(p);
    pthread_cond_destroy(&sh.cv);
    pthread_mutex_destroy(&sh.mu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(grants_per_action, setup, teardown),
        cmocka_unit_test_setup_teardown(officers_have_no_data_plane_rights, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_keys_and_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(cache_invalidation_and_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(revocation_during_a_load_is_not_lost, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
