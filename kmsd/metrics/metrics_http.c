/* GET /metrics over HTTP, served by libmicrohttpd (metrics.h). */
#include "kmsd/metrics/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "base/log.h"

#define HOST_MAX 64

struct kms_metrics_http {
    struct MHD_Daemon *d;
};

static enum MHD_Result answer(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_len, void **state)
{
    (void)cls;
    (void)version;
    (void)upload;
    struct MHD_Response *resp;
    unsigned code;
    enum MHD_Result ret;

    /* A body is never read: the first callback already answers. */
    if (*upload_len != 0)
        *upload_len = 0;
    (void)state;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        static const char msg[] = "only GET\n";
        resp =
            MHD_create_response_from_buffer(sizeof(msg) - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
        code = MHD_HTTP_METHOD_NOT_ALLOWED;
    } else if (strcmp(url, "/metrics") != 0) {
        static const char msg[] = "not found: the metrics are at /metrics\n";
        resp =
            MHD_create_response_from_buffer(sizeof(msg) - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
        code = MHD_HTTP_NOT_FOUND;
    } else {
        char *body = NULL;
        size_t len = 0;
        if (kms_metrics_render(&body, &len) != 0) {
            static const char msg[] = "out of memory\n";
            resp = MHD_create_response_from_buffer(sizeof(msg) - 1, (void *)msg,
                                                   MHD_RESPMEM_PERSISTENT);
            code = MHD_HTTP_INTERNAL_SERVER_ERROR;
        } else {
            resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
            if (resp == NULL)
                free(body);
            code = MHD_HTTP_OK;
        }
    }
    if (resp == NULL)
        return MHD_NO;
    if (code == MHD_HTTP_OK)
        (void)MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4");
    ret = MHD_queue_response(conn, code, resp);
    MHD_destroy_response(resp);
    return ret;
}

static int is_loopback(const struct sockaddr *sa)
{
    switch (sa->sa_family) {
    case AF_INET:
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    case AF_INET6:
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    default:
        return 0;
    }
}

/* "HOST:PORT" or "[V6]:PORT", numeric host only. */
static int parse_listen(const char *listen, struct sockaddr_storage *ss)
{
    char host[HOST_MAX];
    const char *colon = strrchr(listen, ':');
    if (colon == NULL || colon == listen || colon[1] == '\0')
        return kms_error_set(KMS_EINVAL, "metrics.listen: \"%s\" is not HOST:PORT", listen);
    const char *h = listen;
    size_t hl = (size_t)(colon - listen);
    if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl >= sizeof(host))
        return kms_error_set(KMS_EINVAL, "metrics.listen: host too long");
    memcpy(host, h, hl);
    host[hl] = '\0';
    char *end = NULL;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (*end != '\0' || port > 65535 || colon[1] < '0' || colon[1] > '9')
        return kms_error_set(KMS_EINVAL, "metrics.listen: bad port in \"%s\"", listen);
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
    } else {
        return kms_error_set(KMS_EINVAL, "metrics.listen: \"%s\" is not a numeric address", host);
    }
    return KMS_OK;
}

int kms_metrics_http_start(const char *listen, int allow_remote, kms_metrics_http **out, int *port)
{
    struct sockaddr_storage ss;
    KMS_GUARD(parse_listen(listen, &ss));
    if (!is_loopback((const struct sockaddr *)&ss) && !allow_remote)
        return kms_error_set(KMS_EINVAL,
                             "metrics.listen: %s is not a loopback address; the metrics "
                             "are unauthenticated: set metrics.allow_remote: true to serve them "
                             "there",
                             listen);
    kms_metrics_http *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, answer, NULL, MHD_OPTION_SOCK_ADDR,
                            (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT, 16u,
                            MHD_OPTION_PER_IP_CONNECTION_LIMIT, 8u, MHD_OPTION_CONNECTION_TIMEOUT,
                            10u, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)32768, MHD_OPTION_END);
    if (h->d == NULL) {
        free(h);
        return kms_error_set(KMS_EUNAVAIL, "metrics: cannot listen on %s", listen);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    *port = info != NULL ? (int)info->port : 0;
    *out = h;
    return KMS_OK;
}

void kms_metrics_http_stop(kms_metrics_http *h)
{
    if (h == NULL)
        return;
    MHD_stop_daemon(h->d);
    free(h);
}
