#!/bin/sh
# Installs the build into a temporary prefix and builds a program against
# libkmsclient the way an outside user would: pkg-config --cflags --libs
# kmsclient, the installed header, the installed shared library.
#   pkgconfig_check.sh BUILD_DIR WORK_DIR CC [CFLAGS...]
set -eu
build=$1 work=$2 cc=$3
shift 3
rm -rf "$work"
mkdir -p "$work"
cmake --install "$build" --prefix "$work/prefix" >/dev/null
pc=$(dirname "$(find "$work/prefix" -name kmsclient.pc | head -n 1)")
export PKG_CONFIG_PATH="$pc"
cat >"$work/user.c" <<'C'
#include <stdio.h>
#include <string.h>
#include <kms/client.h>
int main(void)
{
    kms_client *c = NULL;
    kms_client_error err;
    kms_client_options o = {.target = "127.0.0.1:1", .ca_file = "/nonexistent",
                            .cert_file = "/nonexistent", .key_file = "/nonexistent"};
    int r = kms_client_open(&o, &c, &err);
    if (r != KMS_CLIENT_EFILE || strcmp(kms_client_status_name(r), "EFILE") != 0) {
        fprintf(stderr, "unexpected %d\n", r);
        return 1;
    }
    /* The archive API is there too. */
    kms_client_archive_info info;
    r = kms_client_archive_inspect((const uint8_t *)"not an archive", 14, &info, &err);
    if (r != KMS_CLIENT_ENOTARCHIVE) {
        fprintf(stderr, "archive: unexpected %d\n", r);
        return 1;
    }
    printf("ok: %s\n", err.message);
    return 0;
}
C
# shellcheck disable=SC2046
"$cc" "$@" -Wall -Werror -o "$work/user" "$work/user.c" $(pkg-config --cflags --libs kmsclient)
LD_LIBRARY_PATH="$(pkg-config --variable=libdir kmsclient)" "$work/user"
