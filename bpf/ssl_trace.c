/* ssl_trace.c: TLS plaintext from libssl, fed into socket_trace.c's exchange pairing.
 *
 * The loader appends this file to socket_trace.c, so both share the connection map, the request
 * buffers and the ring buffer: an HTTPS exchange is paired exactly like a plaintext one.
 *
 * Hooks (uprobes on every libssl the running processes map, attached per library file):
 *   SSL_set_fd                         ties an SSL* to its socket, and marks the socket TLS so the
 *                                      syscall probes skip its ciphertext (no double counting)
 *   SSL_read, SSL_write                plaintext and its length at return
 *   SSL_read_ex, SSL_write_ex          the same, length through the size_t* out argument
 * Apps that wire libssl to a socket through their own BIO never call SSL_set_fd; for them the
 * first read/write syscall made inside an SSL_* call ties the two (see io_enter).
 *
 * Caveats: uprobes cost 1-3 us per call, so only these six functions are hooked; statically
 * linked TLS stacks (Go, rustls, BoringSSL inside a binary) are not seen.
 */

struct ssl_key {
    u32 tgid;
    u32 pad;
    u64 ssl;                  /* SSL* in that process */
};

struct ssl_args {
    u64 ssl;
    void *buf;
    u64 *size_out;            /* the _ex variants' out argument, else 0 */
    u8 dir;
};

/* LRU, as socket_trace.c's syscalls in flight: a thread killed inside SSL_read leaves its entry. */
BPF_TABLE("lru_hash", u64, struct ssl_args, ssl_inflight, 16384); /* pid_tgid -> call args */
BPF_TABLE("lru_hash", struct ssl_key, u64, ssl_conns, MAX_CONNS); /* SSL* -> connection key */

static __always_inline void mark_tls(u64 conn_key) {
    struct conn *c = conns.lookup(&conn_key);
    if (c && !c->tls) {
        c->tls = 1;
        c->proto = PROTO_UNKNOWN;  /* forget what the handshake's ciphertext looked like */
        c->pending = 0;
    }
}

/* Called by io_enter for a tracked socket: a syscall inside an SSL_* call ties SSL* to fd. */
static __always_inline void tie_ssl_to_socket(u64 id, u64 conn_key) {
    struct ssl_args *a = ssl_inflight.lookup(&id);
    if (!a)
        return;
    struct ssl_key k = {.tgid = id >> 32, .ssl = a->ssl};
    ssl_conns.update(&k, &conn_key);
    mark_tls(conn_key);
}

int ssl_set_fd_enter(struct pt_regs *ctx) {
    u64 id = bpf_get_current_pid_tgid();
    if ((id >> 32) == SELF_TGID)
        return 0;
    struct ssl_key k = {.tgid = id >> 32, .ssl = PT_REGS_PARM1(ctx)};
    u64 key = conn_key(id >> 32, (u32)PT_REGS_PARM2(ctx));
    ssl_conns.update(&k, &key);
    mark_tls(key);
    return 0;
}

static __always_inline int ssl_enter(struct pt_regs *ctx, u8 dir, bool ex) {
    u64 id = bpf_get_current_pid_tgid();
    if ((id >> 32) == SELF_TGID)
        return 0;
    struct ssl_args a = {
        .ssl = PT_REGS_PARM1(ctx),
        .buf = (void *)PT_REGS_PARM2(ctx),
        .size_out = ex ? (u64 *)PT_REGS_PARM4(ctx) : 0,
        .dir = dir,
    };
    ssl_inflight.update(&id, &a);
    return 0;
}

static __always_inline int ssl_exit(struct pt_regs *ctx) {
    u64 id = bpf_get_current_pid_tgid();
    struct ssl_args *ap = ssl_inflight.lookup(&id);
    if (!ap)
        return 0;
    struct ssl_args a = *ap;
    ssl_inflight.delete(&id);
    long ret = (int)PT_REGS_RC(ctx);  /* all four return int: the upper half of rax is junk */
    if (a.size_out) {  /* _ex: returns 1 on success, the length is in *size_out */
        u64 n = 0;
        if (ret != 1 || bpf_probe_read_user(&n, sizeof(n), a.size_out) != 0)
            return 0;
        ret = n;
    }
    if (ret <= 0)
        return 0;
    struct ssl_key k = {.tgid = id >> 32, .ssl = a.ssl};
    u64 *key = ssl_conns.lookup(&k);
    if (!key)
        return 0;  /* not tied to a socket we track yet (no SSL_set_fd, no syscall seen) */
    u64 ck = *key;
    struct conn *c = conns.lookup(&ck);
    if (!c)
        return 0;
    return handle_data(id, ck, c, a.dir, a.buf, ret, ret);
}

int ssl_read_enter(struct pt_regs *ctx) { return ssl_enter(ctx, DIR_IN, false); }
int ssl_write_enter(struct pt_regs *ctx) { return ssl_enter(ctx, DIR_OUT, false); }
int ssl_read_ex_enter(struct pt_regs *ctx) { return ssl_enter(ctx, DIR_IN, true); }
int ssl_write_ex_enter(struct pt_regs *ctx) { return ssl_enter(ctx, DIR_OUT, true); }
int ssl_return(struct pt_regs *ctx) { return ssl_exit(ctx); }
