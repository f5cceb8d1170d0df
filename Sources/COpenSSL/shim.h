// OpenSSL for slotproxy's TLS: the headers, and functions for what OpenSSL
// offers only as macros (Swift imports no function-like macros).
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <openssl/evp.h>

static inline long slotproxy_ssl_ctx_set_min_version(SSL_CTX *ctx, int version) {
    return SSL_CTX_set_min_proto_version(ctx, version);
}

// Partial writes, and a retried write may come from a moved buffer: the
// proxy's output buffers compact and grow between attempts.
static inline long slotproxy_ssl_ctx_set_modes(SSL_CTX *ctx) {
    // A peer closing without close_notify is an ordinary end of stream
    // (redis-cli and most clients just close), not an error.
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    return SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
}

static inline long slotproxy_ssl_set_server_name(SSL *ssl, const char *name) {
    return SSL_set_tlsext_host_name(ssl, name);
}

static inline int slotproxy_tls1_2_version(void) { return TLS1_2_VERSION; }
static inline int slotproxy_tls1_3_version(void) { return TLS1_3_VERSION; }
