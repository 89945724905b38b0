/*
 * LD_PRELOAD library that makes every TLS connection of wrk a full handshake.
 *
 * wrk 4.1.0 reuses one SSL object per connection slot: on reconnect it calls
 * SSL_shutdown and SSL_clear, which keep the session, so the next
 * SSL_connect offers it and the server resumes. This wrapper drops the
 * session before each handshake starts. It also counts the handshakes that
 * completed, full and resumed, and writes the counts to the file named by
 * WRK_HANDSHAKE_COUNTS when wrk exits, so the harness can check that no
 * handshake was resumed. A process that started no handshake, such as a
 * wrapper like time(1) that inherited LD_PRELOAD, writes nothing, so it
 * cannot overwrite wrk's counts.
 *
 * The prototypes are declared here, so building needs no OpenSSL headers.
 * They match libssl 3 (ssl.h of OpenSSL 3.0).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;

int SSL_set_session(SSL *ssl, SSL_SESSION *session);
/* ssl.h defines SSL_get0_session as a macro for this function. */
SSL_SESSION *SSL_get_session(const SSL *ssl);
int SSL_in_before(const SSL *ssl);
int SSL_session_reused(const SSL *ssl);

static unsigned long started_handshakes;
static unsigned long full_handshakes;
static unsigned long resumed_handshakes;

int SSL_connect(SSL *ssl) {
    static int (*real_connect)(SSL *);
    if (real_connect == NULL) {
        real_connect = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_connect");
        if (real_connect == NULL) {
            fprintf(stderr, "wrk_full_handshakes: SSL_connect not found: %s\n", dlerror());
            abort();
        }
    }

    /* wrk calls SSL_connect again after each WANT_READ or WANT_WRITE, so
       only the first call of a handshake is "before". */
    if (SSL_in_before(ssl)) {
        __atomic_fetch_add(&started_handshakes, 1, __ATOMIC_RELAXED);
        if (SSL_get_session(ssl) != NULL) {
            SSL_set_session(ssl, NULL);
        }
    }

    int result = real_connect(ssl);
    if (result == 1) {
        unsigned long *counter = SSL_session_reused(ssl) ? &resumed_handshakes : &full_handshakes;
        __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
    }
    return result;
}

__attribute__((destructor)) static void write_counts(void) {
    const char *path = getenv("WRK_HANDSHAKE_COUNTS");
    if (path == NULL || __atomic_load_n(&started_handshakes, __ATOMIC_RELAXED) == 0) {
        return;
    }
    FILE *file = fopen(path, "w");
    if (file == NULL) {
        perror("wrk_full_handshakes: cannot write WRK_HANDSHAKE_COUNTS");
        return;
    }
    fprintf(
        file,
        "full %lu\nresumed %lu\n",
        __atomic_load_n(&full_handshakes, __ATOMIC_RELAXED),
        __atomic_load_n(&resumed_handshakes, __ATOMIC_RELAXED)
    );
    fclose(file);
}
