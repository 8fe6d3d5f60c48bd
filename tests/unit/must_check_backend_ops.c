/* Compiled, not run (test_must_check_backend_ops): every int-returning op
 * of the backend contract carries KMS_MUST_CHECK. Without KMS_OP every
 * result is used and this compiles; with KMS_OP=n only op n's result is
 * ignored, and -Werror=unused-result must refuse it. */
#include "kms/backend.h"

#ifndef KMS_OP
#define KMS_OP -1
#endif

int must_check_backend_ops(kms_backend *b, kms_backend_key *k, kms_aead_io *io,
                           kms_backend_ref *ref, kms_backend_key **out, uint8_t *buf);

int must_check_backend_ops(kms_backend *b, kms_backend_key *k, kms_aead_io *io,
                           kms_backend_ref *ref, kms_backend_key **out, uint8_t *buf)
{
    static const uint8_t id[KMS_KEY_ID_LEN];
    int r = 0;
#if KMS_OP == 0 /* create_version */
    b->ops->create_version(b, id, 1, ref);
#else
    r |= b->ops->create_version(b, id, 1, ref);
#endif
#if KMS_OP == 1 /* open_version */
    b->ops->open_version(b, ref, out);
#else
    r |= b->ops->open_version(b, ref, out);
#endif
#if KMS_OP == 2 /* wrap */
    b->ops->wrap(b, k, io);
#else
    r |= b->ops->wrap(b, k, io);
#endif
#if KMS_OP == 3 /* unwrap */
    b->ops->unwrap(b, k, io);
#else
    r |= b->ops->unwrap(b, k, io);
#endif
#if KMS_OP == 4 /* destroy_version */
    b->ops->destroy_version(b, ref);
#else
    r |= b->ops->destroy_version(b, ref);
#endif
#if KMS_OP == 5 /* random */
    b->ops->random(b, buf, 16);
#else
    r |= b->ops->random(b, buf, 16);
#endif
#if KMS_OP == 6 /* health */
    b->ops->health(b);
#else
    r |= b->ops->health(b);
#endif
#if KMS_OP == 7 /* state_key_create */
    b->ops->state_key_create(b);
#else
    r |= b->ops->state_key_create(b);
#endif
#if KMS_OP == 8 /* state_mac */
    b->ops->state_mac(b, buf, 16, buf);
#else
    r |= b->ops->state_mac(b, buf, 16, buf);
#endif
#if KMS_OP == 9 /* audit_key_create */
    b->ops->audit_key_create(b);
#else
    r |= b->ops->audit_key_create(b);
#endif
#if KMS_OP == 10 /* audit_key_public */
    b->ops->audit_key_public(b, buf);
#else
    r |= b->ops->audit_key_public(b, buf);
#endif
#if KMS_OP == 11 /* audit_sign */
    b->ops->audit_sign(b, buf, buf);
#else
    r |= b->ops->audit_sign(b, buf, buf);
#endif
    return r;
}
