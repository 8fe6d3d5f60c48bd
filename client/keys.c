/* libkmsclient: key metadata (DescribeKey, ListKeys) and the health check. */
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"
#include "grpc/health/v1/health.pb-c.h"
#include "kms/v1/kms.pb-c.h"

static void strings_free(kms_client_strings *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->items[i]);
    free(s->items);
    s->items = NULL;
    s->n = 0;
}

static int strings_copy(char *const *src, size_t n, kms_client_strings *out)
{
    out->items = calloc(n ? n : 1, sizeof(char *));
    out->n = 0;
    if (out->items == NULL)
        return KMS_CLIENT_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if ((out->items[i] = strdup(src[i])) == NULL)
            return KMS_CLIENT_ENOMEM;
        out->n++;
    }
    return KMS_CLIENT_OK;
}

KMS_CLIENT_API void kms_client_key_free(kms_client_key *k)
{
    if (k == NULL)
        return;
    free(k->name);
    free(k->backend);
    free(k->backend_mode);
    free(k->versions);
    strings_free(&k->encrypt);
    strings_free(&k->decrypt);
    strings_free(&k->reencrypt);
    memset(k, 0, sizeof(*k));
}

/* Copies one KeyMetadata; on failure *k is freed and zeroed. */
static int key_copy(const Kms__V1__KeyMetadata *m, kms_client_key *k)
{
    memset(k, 0, sizeof(*k));
    if (m->key_id.len != sizeof(k->key_id))
        return KMS_CLIENT_EREPLY;
    memcpy(k->key_id, m->key_id.data, sizeof(k->key_id));
    k->primary_version = m->primary_version;
    k->min_decryption_version = m->min_decryption_version;
    k->created_at = m->created_at;
    k->deletion_at = m->deletion_at;
    k->rotation_period_days = m->rotation ? m->rotation->rotation_period_days : 0;
    int r = KMS_CLIENT_ENOMEM;
    if ((k->name = strdup(m->key_name)) == NULL || (k->backend = strdup(m->backend)) == NULL ||
        (k->backend_mode = strdup(m->backend_mode)) == NULL)
        goto fail;
    k->versions = calloc(m->n_versions ? m->n_versions : 1, sizeof(*k->versions));
    if (k->versions == NULL)
        goto fail;
    for (size_t i = 0; i < m->n_versions; i++) {
        k->versions[i].version = m->versions[i]->version;
        k->versions[i].state = (int)m->versions[i]->state;
        k->versions[i].created_at = m->versions[i]->created_at;
        k->versions[i].usage_count = m->versions[i]->usage_count;
    }
    k->n_versions = m->n_versions;
    if (m->policy != NULL &&
        ((r = strings_copy(m->policy->encrypt, m->policy->n_encrypt, &k->encrypt)) != 0 ||
         (r = strings_copy(m->policy->decrypt, m->policy->n_decrypt, &k->decrypt)) != 0 ||
         (r = strings_copy(m->policy->reencrypt, m->policy->n_reencrypt, &k->reencrypt)) != 0))
        goto fail;
    k->policy_shown = m->policy != NULL;
    return KMS_CLIENT_OK;
fail:
    kms_client_key_free(k);
    return r;
}

KMS_CLIENT_API int kms_client_describe_key(kms_client *c, const char *key_name, kms_client_key *key,
                                           kms_client_error *err)
{
    Kms__V1__DescribeKeyRequest req = KMS__V1__DESCRIBE_KEY_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    if (c == NULL || key == NULL)
        return kms_client_fail(err, KMS_CLIENT_EARG, "NULL argument");
    if (key_name == NULL || key_name[0] == '\0')
        return kms_client_fail(err, KMS_CLIENT_EARG, "no key name");
    req.key_name = (char *)key_name;
    int r = kms_client_call(c, "/kms.v1.KeyManagement/DescribeKey", &req.base,
                            &kms__v1__describe_key_response__descriptor, NULL, &m, err);
    if (r != 0)
        return r;
    Kms__V1__DescribeKeyResponse *resp = (Kms__V1__DescribeKeyResponse *)m;
    kms_client_key k;
    if (resp->key == NULL)
        r = KMS_CLIENT_EREPLY;
    else
        r = key_copy(resp->key, &k);
    protobuf_c_message_free_unpacked(m, NULL);
    if (r != 0)
        return kms_client_fail(err, r, "reply could not be decoded");
    *key = k;
    return KMS_CLIENT_OK;
}

KMS_CLIENT_API void kms_client_key_list_free(kms_client_key_list *list)
{
    if (list == NULL)
        return;
    for (size_t i = 0; i < list->n; i++)
        kms_client_key_free(&list->keys[i]);
    free(list->keys);
    list->keys = NULL;
    list->n = 0;
}

KMS_CLIENT_API int kms_client_list_keys(kms_client *c, kms_client_key_list *list,
                                        kms_client_error *err)
{
    Kms__V1__ListKeysRequest req = KMS__V1__LIST_KEYS_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    if (c == NULL || list == NULL)
        return kms_client_fail(err, KMS_CLIENT_EARG, "NULL argument");
    int r = kms_client_call(c, "/kms.v1.KeyManagement/ListKeys", &req.base,
                            &kms__v1__list_keys_response__descriptor, NULL, &m, err);
    if (r != 0)
        return r;
    Kms__V1__ListKeysResponse *resp = (Kms__V1__ListKeysResponse *)m;
    kms_client_key_list l = {calloc(resp->n_keys ? resp->n_keys : 1, sizeof(kms_client_key)), 0};
    r = l.keys != NULL ? KMS_CLIENT_OK : KMS_CLIENT_ENOMEM;
    for (size_t i = 0; r == 0 && i < resp->n_keys; i++)
        if ((r = key_copy(resp->keys[i], &l.keys[i])) == 0)
            l.n++;
    protobuf_c_message_free_unpacked(m, NULL);
    if (r != 0) {
        kms_client_key_list_free(&l);
        return kms_client_fail(err, r, "reply could not be decoded");
    }
    *list = l;
    return KMS_CLIENT_OK;
}

KMS_CLIENT_API int kms_client_health(kms_client *c, const char *service, kms_client_error *err)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    if (c == NULL)
        return kms_client_fail(err, KMS_CLIENT_EARG, "NULL argument");
    req.service = (char *)(service != NULL ? service : "");
    int r = kms_client_call(c, "/grpc.health.v1.Health/Check", &req.base,
                            &grpc__health__v1__health_check_response__descriptor, NULL, &m, err);
    if (r != 0)
        return r;
    Grpc__Health__V1__HealthCheckResponse *resp = (Grpc__Health__V1__HealthCheckResponse *)m;
    int serving = resp->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    protobuf_c_message_free_unpacked(m, NULL);
    if (!serving)
        return kms_client_fail(err, KMS_CLIENT_UNAVAILABLE, "server is not serving");
    return KMS_CLIENT_OK;
}
