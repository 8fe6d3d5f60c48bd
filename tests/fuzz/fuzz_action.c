/* libFuzzer target: the bytes of a proposed action and of an approval.
 *
 * Action: canonical bytes carry no NUL inside a string (the wire scan of
 * base/pb_check.h agrees); whatever kms_quorum_action_decode accepts re-encodes to bytes
 * that decode as canonical and re-encode identically (what kmsd stores and
 * officers sign); bytes accepted as canonical are accepted as a proposal;
 * validation against a small fixed state (a SQLite file in a temp dir, one
 * key, three officers) returns 0 or a KMS_E code, and a validated body
 * still re-encodes canonically.
 *
 * Approval: the input as a signature over its own SHA-256 never verifies
 * under a fixed P-256 or Ed25519 key, and the input as an officer's PEM
 * public key either is refused or normalizes to a fixed point. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/rand.h>
#include <openssl/sha.h>

#include "base/pb_check.h"
#include "kmsd/keyring/keyring.h"
#include "kmsd/policy/policy.h"
#include "kmsd/quorum/quorum_actions.h"
#include "kmsd/quorum/signature.h"
#include "kmsd/store/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char p256_pem[] = "-----BEGIN PUBLIC KEY-----\n"
                               "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAETOUaCH7EtzBxWG70QLAxjY85Uhve\n"
                               "KpqnHwQPBWEo9eniDLobilomIGghd2uuCWb2mkdHJxemh4MgiNpfFyB+Yg==\n"
                               "-----END PUBLIC KEY-----\n";
static const char ed25519_pem[] = "-----BEGIN PUBLIC KEY-----\n"
                                  "MCowBQYDK2VwAyEAiOE9VUhohlI1bpaMfBOfydZRikbyIQEBVVbTTEdoxe0=\n"
                                  "-----END PUBLIC KEY-----\n";

/* ---- the fixed state validation reads --------------------------------------------------- */

struct kms_backend_key {
    int unused;
};

static int stub_create(kms_backend *b, const uint8_t key_id[KMS_KEY_ID_LEN], uint32_t version,
                       kms_backend_ref *ref)
{
    (void)b;
    memcpy(ref->bytes, key_id, KMS_KEY_ID_LEN);
    ref->bytes[KMS_KEY_ID_LEN] = (uint8_t)version;
    ref->len = KMS_KEY_ID_LEN + 1;
    return KMS_OK;
}

static int stub_open(kms_backend *b, const kms_backend_ref *ref, kms_backend_key **out)
{
    (void)b;
    (void)ref;
    *out = calloc(1, sizeof(**out));
    return *out != NULL ? KMS_OK : KMS_ENOMEM;
}

static void stub_release(kms_backend *b, kms_backend_key *k)
{
    (void)b;
    free(k);
}

static int stub_aead(kms_backend *b, kms_backend_key *k, kms_aead_io *io)
{
    (void)b;
    (void)k;
    (void)io;
    return KMS_EUNAVAIL;
}

static int stub_destroy(kms_backend *b, const kms_backend_ref *ref)
{
    (void)b;
    (void)ref;
    return KMS_OK;
}

static int stub_random(kms_backend *b, uint8_t *out, size_t n)
{
    (void)b;
    return RAND_bytes(out, (int)n) == 1 ? KMS_OK : KMS_EUNAVAIL;
}

static int stub_health(kms_backend *b)
{
    (void)b;
    return KMS_OK;
}

static void stub_close(kms_backend *b)
{
    (void)b;
}

static const kms_backend_ops stub_ops = {
    .name = "pkcs11",
    .create_version = stub_create,
    .open_version = stub_open,
    .release_version = stub_release,
    .wrap = stub_aead,
    .unwrap = stub_aead,
    .destroy_version = stub_destroy,
    .random = stub_random,
    .health = stub_health,
    .close = stub_close,
};

static struct {
    char dir[256], db[300];
    kms_backend backend;
    kms_store *store;
    kms_keyring *kr;
    kms_policy *policy;
    kms_action_env env;
} w;

static void world_remove(void)
{
    const char *suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (int i = 0; i < 4; i++) {
        char path[320];
        snprintf(path, sizeof(path), "%s%s", w.db, suffixes[i]);
        unlink(path);
    }
    rmdir(w.dir);
}

static void world_open(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(w.dir, sizeof(w.dir), "%s/kms-fuzz-action-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(w.dir) == NULL)
        abort();
    snprintf(w.db, sizeof(w.db), "%s/kms.db", w.dir);
    atexit(world_remove);
    w.backend.ops = &stub_ops;
    kms_key_rec rec;
    if (kms_store_sqlite_open(w.db, &w.store) != 0 || kms_keyring_open(w.store, NULL, &w.kr) != 0 ||
        kms_keyring_add_backend(w.kr, &w.backend) != 0 ||
        kms_keyring_create_key(w.kr, "k1", "pkcs11", &rec) != 0)
        abort();
    const char *ids[] = {"o1", "o2", "o3"};
    for (size_t i = 0; i < 3; i++) {
        kms_officer_rec o;
        memset(&o, 0, sizeof(o));
        snprintf(o.id, sizeof(o.id), "%s", ids[i]);
        snprintf(o.identity, sizeof(o.identity), "spiffe://test/%s", ids[i]);
        snprintf(o.signing_key_pem, sizeof(o.signing_key_pem), "%s", p256_pem);
        if (w.store->ops->officer_add(w.store, &o) != 0)
            abort();
    }
    for (size_t i = 0; i < kms_quorum_n_actions; i++)
        if (w.store->ops->threshold_set(w.store, kms_quorum_actions[i].type, 2) != 0)
            abort();
    if (kms_policy_open(w.store, &w.policy) != 0)
        abort();
    w.env = (kms_action_env){w.store, w.kr, w.policy, 1700000000};
}

/* ---- the target ------------------------------------------------------------------------- */

/* b packed into a fresh buffer (malloc'd, *len bytes). */
static uint8_t *packed(const Kms__V1__ActionBody *b, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(&b->base);
    uint8_t *out = malloc(*len ? *len : 1);
    if (out == NULL)
        abort();
    protobuf_c_message_pack(&b->base, out);
    return out;
}

/* bytes (kmsd's own encoding of a body) decode as canonical and encode
 * to themselves. */
static void assert_canonical(const uint8_t *bytes, size_t len)
{
    Kms__V1__ActionBody *again = NULL;
    if (len > KMS_ACTION_BYTES_MAX)
        return; /* refused by size, as a proposal would be */
    if (kms_quorum_action_decode(bytes, len, 1, &again) != KMS_OK)
        abort();
    size_t n = 0;
    uint8_t *twice = packed(again, &n);
    if (n != len || memcmp(twice, bytes, len) != 0)
        abort();
    free(twice);
    protobuf_c_message_free_unpacked(&again->base, NULL);
}

static void action(const uint8_t *data, size_t size)
{
    Kms__V1__ActionBody *b = NULL;
    int lax = kms_quorum_action_decode(data, size, 0, &b);
    Kms__V1__ActionBody *c = NULL;
    int strict = kms_quorum_action_decode(data, size, 1, &c);
    if (c != NULL)
        protobuf_c_message_free_unpacked(&c->base, NULL);
    if (strict == KMS_OK && lax != KMS_OK)
        abort(); /* canonical bytes are always a valid proposal */
    /* Canonical bytes re-encode identically, so no string in them can hold
     * a NUL (protobuf-c would have cut it); the wire scan agrees. */
    if (strict == KMS_OK &&
        kms_pb_wire_has_nul_string(&kms__v1__action_body__descriptor, data, size))
        abort();
    if (lax != KMS_OK)
        return;
    size_t len = 0;
    uint8_t *bytes = packed(b, &len);
    assert_canonical(bytes, len);
    free(bytes);
    int r = kms_quorum_action_validate(&w.env, b);
    if (r > 0 || (r != 0 && kms_strerror(r) == NULL))
        abort();
    if (r == 0) {
        bytes = packed(b, &len);
        assert_canonical(bytes, len);
        free(bytes);
    }
    protobuf_c_message_free_unpacked(&b->base, NULL);
}

static void approval(const uint8_t *data, size_t size)
{
    uint8_t digest[32];
    SHA256(data, size, digest);
    if (kms_signature_verify(p256_pem, digest, data, size) != KMS_EAUTH ||
        kms_signature_verify(ed25519_pem, digest, data, size) != KMS_EAUTH)
        abort();
    static char out[KMS_SIGNING_KEY_PEM_MAX + 1], again[KMS_SIGNING_KEY_PEM_MAX + 1];
    if (kms_signature_key_normalize((const char *)data, size, out, sizeof(out)) == KMS_OK) {
        if (kms_signature_key_normalize(out, strlen(out), again, sizeof(again)) != KMS_OK ||
            strcmp(out, again) != 0)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (w.store == NULL)
        world_open();
    action(data, size);
    approval(data, size);
    return 0;
}
