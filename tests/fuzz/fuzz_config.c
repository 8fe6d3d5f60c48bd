/* libFuzzer target: kmsd's configuration parser (YAML through libyaml and
 * the schema walk). Any input either applies cleanly or fails with
 * KMS_EINVAL/KMS_ENOMEM; nothing leaks, nothing is read out of bounds. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "kmsd/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kms_config c;
    if (kms_config_init(&c) != KMS_OK)
        return 0;
    int r = kms_config_load_buffer(&c, (const char *)data, size, "/base");
    if (r != KMS_OK && r != KMS_EINVAL && r != KMS_ENOMEM)
        abort(); /* the documented failures only */
    if (r == KMS_OK && c.listen == NULL)
        abort(); /* a successful load keeps every required default */
    if (kms_config_validate(&c, KMS_CONFIG_RUN) == KMS_OK && c.database == NULL)
        abort(); /* validation promised a database */
    kms_config_free(&c);
    return 0;
}
