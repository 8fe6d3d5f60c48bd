/* Compiled, not run (test_must_check_store_ops): ignoring the result of a
 * store op called through the ops vtable must fail the build. With
 * KMS_CHECKED the same call is checked and the file compiles, so the
 * failure is known to come from the unused result alone. */
#include "kmsd/store/store.h"

int ignore_a_store_result(kms_store *s, const kms_key_rec *k);

int ignore_a_store_result(kms_store *s, const kms_key_rec *k)
{
#ifdef KMS_CHECKED
    return s->ops->key_create(s, k);
#else
    s->ops->key_create(s, k);
    return 0;
#endif
}
