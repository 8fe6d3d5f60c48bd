/* The standard PKCS#11 header (p11-kit's), made safe to include next to
 * our own headers.
 *
 * p11-kit's pkcs11.h (0.24/0.25) leaves some of its compatibility macros
 * defined: lowercase names such as aad_len, iv_len and tag_bits expand to
 * the PKCS#11 field names. Included before kms/backend.h that silently
 * renames kms_aead_io.aad_len in one translation unit and not in another;
 * included after, `io->aad_len` stops compiling. Include this instead of
 * <p11-kit/pkcs11.h> everywhere. */
#ifndef KMS_P11_PKCS11_H
#define KMS_P11_PKCS11_H

#include <p11-kit/pkcs11.h>

#undef aad_len
#undef aad_ptr
#undef ck_rsa_pkcs_mgf_type_t
#undef ck_rsa_pkcs_oaep_source_type_t
#undef counter_bits
#undef data_params
#undef hash_alg
#undef iv_bits
#undef iv_len
#undef iv_ptr
#undef public_data
#undef public_data_len
#undef s_len
#undef shared_data
#undef shared_data_len
#undef source_data
#undef source_data_len
#undef string_data
#undef string_data_len
#undef tag_bits

#endif
