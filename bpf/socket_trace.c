/* socket_trace.c: TCP connections and HTTP/1.x exchanges, seen at the syscall.
 *
 * Hooks (stable tracepoints only; this kernel has no kprobes and no fentry):
 *   syscalls:sys_{enter,exit}_{accept,accept4,connect}   learn sockets per (tgid, fd)
 *   syscalls:sys_{enter,exit}_{read,readv,recvfrom,recvmsg,write,writev,sendto,sendmsg}
 *   syscalls:sys_enter_close                              emit the connection's flow
 *   sched:sched_process_fork                              children of servers that accept
 *   sched:sched_process_{exec,exit}                       a pid's name is stale (EV_PROCESS)
 *   sock:inet_sock_set_state                              local/remote addresses
 *
 * Why this shape:
 * - Every read() on the host enters here, so the entry probes do one map lookup
 *   (is this fd a socket we track?) and leave; only tracked sockets pay more.
 * - The protocol (HTTP/1, PostgreSQL, MySQL, Redis, MongoDB, Kafka) is recognised
 *   from a connection's first bytes and exchanges are paired in the kernel: the
 *   request prefix waits in `req_bufs` until the response's first bytes, then
 *   one event carries both, with both timestamps taken at the syscall. User
 *   space never pairs, so a dropped event never mispairs the next one.
 *   Connections of any other protocol are counted (bytes) but never captured.
 * - Request paths: while a thread serves a request (from reading it to writing its response),
 *   the client requests it starts carry that request as their parent (`serving`, per thread).
 * - Probes are switched in the kernel (`switches`, written by the worker): a protocol switched
 *   off opens no exchange, so it costs one array lookup per request and nothing in user space.
 * - Pre-forking servers (PostgreSQL) accept in the parent and serve in a child forked for the
 *   connection: the child takes over the parent's entry. It must be the connection the parent
 *   held when it forked that child, since the parent closes its copy and accepts the next one on
 *   the same fd, before or after the child's first read (sched:sched_process_fork records when).
 * - A worker scoped to a cgroup (CGROUP_ID) tracks only sockets its processes accept or connect,
 *   so two workers on one machine behave as two hosts.
 * - Events are submitted with BPF_RB_NO_WAKEUP; the worker polls the ring
 *   buffer on a timer. Waking user space per event halves nginx's throughput.
 * - Totals (bytes, exchanges per connection, events lost) live in maps and
 *   stay exact when the ring buffer is full.
 *
 * Caveats (best effort, counted rather than hidden):
 * - Only the first iovec of readv/writev/recvmsg/sendmsg is inspected.
 * - HTTP: a request pending when the next one arrives (pipelining) is replaced
 *   and counted in CNT_UNANSWERED; interim 1xx responses do not end an exchange.
 *   Other protocols: requests sent while one is pending join it (its bytes), so a
 *   pipeline is one exchange whose capture holds its first commands.
 * - Sockets opened before the worker started are seeded from /proc by user space.
 * - Local address of an accepted socket comes from the handshake's state change
 *   keyed by the peer; when the app passes no sockaddr to accept, user space
 *   resolves it from /proc.
 */
#include <uapi/linux/ptrace.h>
#include "common.h"

#define SELF_TGID __SELF_TGID__           /* the worker never traces itself */
#define CGROUP_ID __CGROUP_ID__           /* cgroup v2 id the worker is scoped to; 0: whole host */
#define CGROUP_LEVEL __CGROUP_LEVEL__     /* its depth below the cgroup v2 root */
#define MAX_REQ 1024                      /* request prefix: HTTP head, SQL text up to 1 KiB */
#define MAX_RESP 256                      /* response prefix: status + length headers */
#define MAX_CONNS 65536
#define MAX_PENDING 8192                  /* connections with a request in flight (10 MiB) */
#define MAX_APPEND 256                    /* a later write adds < this to a request's capture */

enum role { ROLE_UNKNOWN = 0, ROLE_SERVER = 1, ROLE_CLIENT = 2 };
/* Mirrored in probes/programs/socket_trace.py PROTOCOLS. */
enum proto {
    PROTO_UNKNOWN = 0,
    PROTO_HTTP = 1,
    PROTO_OTHER = 2,      /* not a protocol we parse: bytes counted, nothing captured */
    PROTO_POSTGRES = 3,
    PROTO_MYSQL = 4,
    PROTO_REDIS = 5,
    PROTO_MONGODB = 6,
    PROTO_KAFKA = 7,
};
enum event_type { EV_HTTP = 1, EV_FLOW = 2, EV_PROCESS = 3 };
enum io_kind { IO_BUF = 0, IO_IOV = 1, IO_MSG = 2 };
enum direction { DIR_IN = 0, DIR_OUT = 1 };

/* Slots of `switches` and `exchanges_by_probe`: the protocol ids, plus these. */
#define SLOT_FLOWS 0                      /* PROTO_UNKNOWN never opens an exchange: flows use it */
#define SLOT_TLS 8                        /* exchanges seen through the libssl uprobes */
#define SLOTS 9

enum counter {
    CNT_EXCHANGES = 0,        /* paired requests and responses, every protocol, exact */
    CNT_EVENTS_LOST = 1,      /* ring buffer full: exchange counted, record lost */
    CNT_FLOWS = 2,
    CNT_FLOWS_LOST = 3,
    CNT_UNCLASSIFIED = 4,     /* connections whose first bytes were not HTTP */
    CNT_UNANSWERED = 5,       /* request replaced before its response */
    CNT_REQ_BUF_FULL = 6,     /* no room to stash a request prefix */
    CNT_MAX = 7,
};

struct conn {
    u64 opened_ns;
    u64 bytes_sent;
    u64 bytes_recv;
    u64 req_ns;               /* when the pending request's first bytes moved */
    u64 parent_ns;            /* client: the server request its thread was serving (0: none) */
    u32 req_bytes;            /* bytes of the pending request so far */
    u32 req_tid;
    u32 requests;             /* completed exchanges */
    u32 parent_fd;            /* client: that server request's connection */
    u8 role;
    u8 proto;
    u8 pending;
    u8 tls;                   /* the app talks TLS on it: ssl_trace.c sees the plaintext */
    u8 short_read;            /* its last unclassified request read was 4 bytes */
    u8 pad[3];
    struct addr laddr;
    struct addr raddr;
};

struct req_buf {
    u32 len;
    u8 data[MAX_REQ + MAX_APPEND];  /* slack so the verifier can prove an append stays inside */
};

/* Arguments of a data syscall in flight, from entry to exit. */
struct io_args {
    u64 conn_key;
    void *ptr;                /* buffer, iovec array or msghdr */
    u8 kind;
    u8 dir;
};

struct accept_args {
    void *sockaddr;
};

struct connect_args {
    u64 conn_key;
};

/* The server request a thread is serving, from the read of the request to the write of its
 * response: calls the thread makes meanwhile are that request's downstream calls. */
struct serving {
    u64 req_ns;
    u32 fd;
    u32 pad;
};

struct http_event {
    u8 type;
    u8 role;
    u16 req_len;              /* bytes captured in req[] */
    u16 resp_len;             /* bytes captured in resp[] */
    u8 proto;
    u8 tls;
    u32 pid;
    u32 tid;
    u32 fd;
    u32 req_bytes;            /* whole request as moved through the syscalls */
    u32 resp_bytes;           /* the response's first syscall */
    u64 req_ns;
    u64 resp_ns;
    u64 parent_ns;            /* client: the server request its thread was serving (0: none) */
    u32 parent_fd;
    u32 pad;
    struct addr laddr;
    struct addr raddr;
    char comm[16];            /* names short-lived processes gone before user space looks */
    u8 req[MAX_REQ];
    u8 resp[MAX_RESP];
};

struct flow_event {
    u8 type;
    u8 role;
    u8 proto;
    u8 tls;
    u32 pid;
    u32 fd;
    u32 requests;
    u64 opened_ns;
    u64 closed_ns;
    u64 bytes_sent;
    u64 bytes_recv;
    struct addr laddr;
    struct addr raddr;
    char comm[16];
};

/* A process ran a new program or exited: the name user space cached for its pid is stale. */
struct process_event {
    u8 type;
    u8 exited;                /* 0: exec */
    u8 pad[2];
    u32 pid;
};

BPF_RINGBUF_OUTPUT(events, __RINGBUF_PAGES__);
BPF_TABLE("lru_hash", u64, struct conn, conns, MAX_CONNS);
BPF_TABLE("lru_hash", u64, struct req_buf, req_bufs, MAX_PENDING);
/* Syscalls in flight, by thread. LRU: a thread killed inside one (a server stopped while blocked
 * in accept or read) never deletes its entry, and a plain hash would fill up with those over a
 * long run and then silently stop tracking anything new. */
BPF_TABLE("lru_hash", u64, struct io_args, io_inflight, 16384);
BPF_TABLE("lru_hash", u64, struct accept_args, accept_inflight, 4096);
BPF_TABLE("lru_hash", u64, struct connect_args, connect_inflight, 4096);
BPF_TABLE("lru_hash", u64, u64, sk_connecting, 4096);  /* sock address -> conn key, until connected */
BPF_TABLE("lru_hash", struct addr, struct addr, accepted_local, 4096); /* peer -> local */
BPF_PERCPU_ARRAY(counters, u64, CNT_MAX);
BPF_ARRAY(switches, u32, SLOTS);                   /* 1: on; written by the worker */
BPF_PERCPU_ARRAY(exchanges_by_probe, u64, SLOTS);  /* what each probe costs, in events */
BPF_TABLE("lru_hash", u64, struct serving, serving, 16384);  /* pid_tgid -> request in service */
/* Pre-forking servers (PostgreSQL, Apache prefork) accept in the parent and serve in a child. */
struct last_fork {
    u64 ns;
    u32 child;
    u32 pad;
};
struct forked_from {
    u32 parent;
    u32 pad;
    u64 ns;
};
BPF_TABLE("lru_hash", u32, struct last_fork, servers, 4096); /* tgid that accepts -> its last fork */
BPF_ARRAY(fork_child, u32, 65536);                           /* [tgid & 0xffff]: a server's child */
BPF_TABLE("lru_hash", u32, struct forked_from, fork_parent, 16384); /* child tgid -> its server */
/* The server closed it unused after forking: keyed by the child's (tgid, fd), because the server
 * accepts its next connection on the same fd before the child may have read a byte. */
BPF_TABLE("lru_hash", u64, struct conn, handed_off, 4096);
BPF_PERCPU_ARRAY(scratch_req, struct req_buf, 1);  /* zeroed value for inserts */

static __always_inline void count(u32 idx) {
    u64 *v = counters.lookup(&idx);
    if (v)
        (*v)++;
}

static __always_inline bool switched_on(u32 slot) {
    u32 *on = switches.lookup(&slot);
    return on && *on;
}

static __always_inline void count_probe(u32 slot) {
    u64 *v = exchanges_by_probe.lookup(&slot);
    if (v)
        (*v)++;
}

/* Outside the cgroup this worker watches: such a process's sockets are never tracked. */
static __always_inline bool out_of_scope(void) {
    if (CGROUP_ID == 0)
        return false;
    return bpf_get_current_ancestor_cgroup_id(CGROUP_LEVEL) != CGROUP_ID;
}

static __always_inline u64 conn_key(u32 tgid, u32 fd) {
    return ((u64)tgid << 32) | fd;
}

static __always_inline void read_sockaddr(struct addr *out, void *uaddr) {
    struct user_sockaddr sa = {};
    if (!uaddr || bpf_probe_read_user(&sa, sizeof(sa), uaddr) != 0)
        return;
    if (sa.family == AF_INET) {
        out->family = AF_INET;
        out->port = bpf_ntohs(sa.port_be);
        __builtin_memcpy(out->ip, &sa.flowinfo_or_ipv4, 4);
    } else if (sa.family == AF_INET6) {
        out->family = AF_INET6;
        out->port = bpf_ntohs(sa.port_be);
        __builtin_memcpy(out->ip, sa.ipv6, 16);
    }
}

/* ---- accept: the server side of a connection ---- */

static __always_inline int accept_enter(void *sockaddr) {
    u64 id = bpf_get_current_pid_tgid();
    if ((id >> 32) == SELF_TGID || out_of_scope())
        return 0;
    struct accept_args a = {.sockaddr = sockaddr};
    accept_inflight.update(&id, &a);
    return 0;
}

static __always_inline int accept_exit(long ret) {
    u64 id = bpf_get_current_pid_tgid();
    struct accept_args *a = accept_inflight.lookup(&id);
    if (!a)
        return 0;
    void *sockaddr = a->sockaddr;
    accept_inflight.delete(&id);
    if (ret < 0)
        return 0;
    struct conn c = {};
    c.opened_ns = bpf_ktime_get_ns();
    c.role = ROLE_SERVER;
    read_sockaddr(&c.raddr, sockaddr);
    if (sockaddr && c.raddr.family == 0)
        return 0;  /* AF_UNIX or another family: not TCP */
    if (c.raddr.family) {
        struct addr *local = accepted_local.lookup(&c.raddr);
        if (local) {
            c.laddr = *local;
            accepted_local.delete(&c.raddr);
        }
    }
    u64 key = conn_key(id >> 32, (u32)ret);
    conns.update(&key, &c);
    u32 tgid = id >> 32;
    if (!servers.lookup(&tgid)) {
        struct last_fork never = {};
        servers.update(&tgid, &never);
    }
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_accept4) { return accept_enter(args->upeer_sockaddr); }
TRACEPOINT_PROBE(syscalls, sys_exit_accept4) { return accept_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_accept) { return accept_enter(args->upeer_sockaddr); }
TRACEPOINT_PROBE(syscalls, sys_exit_accept) { return accept_exit(args->ret); }

/* ---- connect: the client side ---- */

TRACEPOINT_PROBE(syscalls, sys_enter_connect) {
    u64 id = bpf_get_current_pid_tgid();
    if ((id >> 32) == SELF_TGID || out_of_scope())
        return 0;
    struct conn c = {};
    read_sockaddr(&c.raddr, args->uservaddr);
    if (c.raddr.family == 0)
        return 0;  /* unix sockets and friends */
    c.opened_ns = bpf_ktime_get_ns();
    c.role = ROLE_CLIENT;
    u64 key = conn_key(id >> 32, (u32)args->fd);
    conns.update(&key, &c);
    struct connect_args ca = {.conn_key = key};
    connect_inflight.update(&id, &ca);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_connect) {
    u64 id = bpf_get_current_pid_tgid();
    connect_inflight.delete(&id);
    return 0;
}

/* ---- TCP state changes: fill in addresses the syscalls do not show ---- */

TRACEPOINT_PROBE(sock, inet_sock_set_state) {
    if (args->protocol != IPPROTO_TCP_NUM)
        return 0;
    u64 sk = (u64)args->skaddr;
    if (args->oldstate == TCP_CLOSE && args->newstate == TCP_SYN_SENT) {
        /* Runs in the connecting task, inside connect(): tie the socket to its fd. */
        u64 id = bpf_get_current_pid_tgid();
        struct connect_args *ca = connect_inflight.lookup(&id);
        if (ca) {
            u64 key = ca->conn_key;
            sk_connecting.update(&sk, &key);
        }
        return 0;
    }
    if (args->newstate != TCP_ESTABLISHED) {
        if (args->oldstate == TCP_SYN_SENT)
            sk_connecting.delete(&sk);  /* refused or timed out: never connected */
        return 0;
    }
    struct addr local = {}, remote = {};
    tp_addr(&local, args->family, args->sport, args->saddr, args->saddr_v6);
    tp_addr(&remote, args->family, args->dport, args->daddr, args->daddr_v6);
    if (args->oldstate == TCP_SYN_RECV) {
        /* Server side, often in softirq: accept() will look this up by peer. */
        accepted_local.update(&remote, &local);
        return 0;
    }
    if (args->oldstate == TCP_SYN_SENT) {
        u64 *key = sk_connecting.lookup(&sk);
        if (!key)
            return 0;
        struct conn *c = conns.lookup(key);
        if (c) {
            c->laddr = local;
            c->raddr = remote;
        }
        sk_connecting.delete(&sk);
    }
    return 0;
}

/* ---- data: reads and writes on tracked sockets ---- */

/* In ssl_trace.c, which the loader appends to this file. */
static __always_inline void tie_ssl_to_socket(u64 id, u64 conn_key);

/* Runs in the parent. Only children of processes that accept TCP are remembered. */
TRACEPOINT_PROBE(sched, sched_process_fork) {
    u32 parent = bpf_get_current_pid_tgid() >> 32;
    struct last_fork *last = servers.lookup(&parent);
    if (!last)
        return 0;
    u32 child = args->child_pid;
    last->ns = bpf_ktime_get_ns();
    last->child = child;
    u32 slot = child & 0xffff;
    fork_child.update(&slot, &child);
    struct forked_from from = {.parent = parent, .ns = last->ns};
    fork_parent.update(&child, &from);
    return 0;
}

/* Names are cached per pid in user space: an exec renames a process (an entrypoint script
 * exec'ing the server) and the pid of an exited process is soon another's (pid_max can be 32768).
 * Only whole processes: the exit of a thread that is not the group leader frees no pid. A lost
 * event (ring buffer full) leaves the old name until its TTL. */
static __always_inline int process_changed(u8 exited) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if (tgid != (u32)id || tgid == SELF_TGID || out_of_scope())
        return 0;
    struct process_event *e = events.ringbuf_reserve(sizeof(struct process_event));
    if (!e)
        return 0;
    e->type = EV_PROCESS;
    e->exited = exited;
    e->pid = tgid;
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exec) { return process_changed(0); }
TRACEPOINT_PROBE(sched, sched_process_exit) { return process_changed(1); }

/* A server's child using a socket the server accepted: take the server's entry over. The array
 * check costs no hashing, so processes that are no server's children pay almost nothing. */
static __always_inline struct conn *adopt(u32 tgid, u32 fd, u64 key) {
    u32 slot = tgid & 0xffff;
    u32 *mark = fork_child.lookup(&slot);
    if (!mark || *mark != tgid)
        return 0;
    struct forked_from *from = fork_parent.lookup(&tgid);
    if (!from)
        return 0;
    struct conn *inherited = handed_off.lookup(&key);
    if (!inherited) {
        /* Still open in the server: ours only if it was open when we were forked; a later one
         * on the same fd is the server's next connection, handed to the next child. */
        u64 parent_key = conn_key(from->parent, fd);
        inherited = conns.lookup(&parent_key);
        if (inherited && inherited->opened_ns > from->ns)
            return 0;
    }
    if (!inherited)
        return 0;
    struct conn copy = *inherited;
    conns.update(&key, &copy);
    handed_off.delete(&key);
    return conns.lookup(&key);
}

static __always_inline int io_enter(u32 fd, void *ptr, u8 kind, u8 dir) {
    u64 id = bpf_get_current_pid_tgid();
    u64 key = conn_key(id >> 32, fd);
    struct conn *c = conns.lookup(&key);
    if (!c)
        c = adopt(id >> 32, fd, key);
    if (!c)
        return 0;  /* the common case: not a socket we track */
    tie_ssl_to_socket(id, key);
    struct io_args io = {.conn_key = key, .ptr = ptr, .kind = kind, .dir = dir};
    io_inflight.update(&id, &io);
    return 0;
}

/* The first user buffer of the syscall: plain buffer, iovec[0] or msghdr's iovec[0]. */
static __always_inline void *first_buffer(struct io_args *io, u64 *len) {
    struct user_iovec iov = {};
    void *vec = io->ptr;
    if (io->kind == IO_BUF)
        return io->ptr;
    if (io->kind == IO_MSG) {
        struct user_msghdr_head msg = {};
        if (bpf_probe_read_user(&msg, sizeof(msg), io->ptr) != 0 || msg.iovlen == 0)
            return 0;
        vec = msg.iov;
    }
    if (bpf_probe_read_user(&iov, sizeof(iov), vec) != 0)
        return 0;
    if (iov.len < *len)
        *len = iov.len;
    return iov.base;
}

static __always_inline bool is_http_request(const u8 *h) {
    switch (h[0]) {
    case 'G': return h[1] == 'E' && h[2] == 'T' && h[3] == ' ';
    case 'P': return (h[1] == 'O' && h[2] == 'S' && h[3] == 'T' && h[4] == ' ') ||
                     (h[1] == 'U' && h[2] == 'T' && h[3] == ' ') ||
                     (h[1] == 'A' && h[2] == 'T' && h[3] == 'C' && h[4] == 'H' && h[5] == ' ');
    case 'H': return h[1] == 'E' && h[2] == 'A' && h[3] == 'D' && h[4] == ' ';
    case 'D': return h[1] == 'E' && h[2] == 'L' && h[3] == 'E' && h[4] == 'T' && h[5] == 'E';
    case 'O': return h[1] == 'P' && h[2] == 'T' && h[3] == 'I' && h[4] == 'O' && h[5] == 'N';
    case 'C': return h[1] == 'O' && h[2] == 'N' && h[3] == 'N' && h[4] == 'E' && h[5] == 'C';
    case 'T': return h[1] == 'R' && h[2] == 'A' && h[3] == 'C' && h[4] == 'E' && h[5] == ' ';
    }
    return false;
}

static __always_inline bool is_http_response(const u8 *h) {
    return h[0] == 'H' && h[1] == 'T' && h[2] == 'T' && h[3] == 'P' && h[4] == '/' && h[5] == '1' &&
           h[6] == '.';
}

static __always_inline u32 be32(const u8 *p) {
    return ((u32)p[0] << 24) | ((u32)p[1] << 16) | ((u32)p[2] << 8) | p[3];
}

static __always_inline u32 le32(const u8 *p) {
    return ((u32)p[3] << 24) | ((u32)p[2] << 16) | ((u32)p[1] << 8) | p[0];
}

/* The protocol of a connection from its first message. `request` says the bytes went from
 * client to server; `len` is what the syscall moved. Each test needs the message's own framing
 * to agree with the syscall, so random binary rarely passes; what fails them is PROTO_OTHER. */
/* api_key, api_version, correlation_id, client_id length (-1 or short) of a request header. */
static __always_inline bool kafka_header(const u8 *h) {
    u16 api_key = (h[0] << 8) | h[1];
    u16 api_version = (h[2] << 8) | h[3];
    s16 client_id_len = (s16)((h[8] << 8) | h[9]);
    return api_key < 100 && api_version < 32 && client_id_len >= -1 && client_id_len < 256;
}

static __always_inline u8 classify(const u8 *h, long len, bool request, bool after_short_read) {
    if (is_http_request(h) || is_http_response(h))
        return PROTO_HTTP;
    if (!request) {
        /* MySQL/MariaDB: the server speaks first, a v10 greeting in packet 0. */
        u32 plen = h[0] | (h[1] << 8) | (h[2] << 16);
        if (h[3] == 0 && h[4] == 10 && plen + 4 <= len)
            return PROTO_MYSQL;
        return PROTO_OTHER;
    }
    /* PostgreSQL: StartupMessage v3.0, SSLRequest or GSSENCRequest, length first. */
    u32 code = be32(h + 4);
    if (be32(h) <= len && (code == 0x00030000 || code == 80877103 || code == 80877104))
        return PROTO_POSTGRES;
    /* Redis: a RESP array of bulk strings ("*<n>\r\n$"). */
    if (h[0] == '*' && h[1] >= '1' && h[1] <= '9' && (h[2] == '\r' || (h[3] == '\r' && h[2] >= '0' && h[2] <= '9')))
        return PROTO_REDIS;
    /* MongoDB: messageLength (LE), requestID, responseTo 0 (a request), then OP_MSG 2013 or
     * OP_QUERY 2004. Servers may read the 16-byte header alone, so the length may exceed `len`. */
    u32 op = le32(h + 12);
    u32 msg_len = le32(h);
    if (len >= 16 && msg_len >= 16 && msg_len <= 48 << 20 && le32(h + 8) == 0 && (op == 2013 || op == 2004))
        return PROTO_MONGODB;
    /* Kafka: size (BE) of a request that fits in this write, api_key and api_version in range. */
    if (be32(h) >= 8 && be32(h) + 4 <= len && kafka_header(h + 4))
        return PROTO_KAFKA;
    /* A Kafka broker that read the 4-byte size alone first: the header starts right here. */
    if (after_short_read && kafka_header(h))
        return PROTO_KAFKA;
    return PROTO_OTHER;
}

/* HTTP marks its messages; the others are request/response protocols without pipelining in the
 * common case: the first bytes in the request direction open an exchange, the first bytes back
 * close it. */
static __always_inline bool starts_request(u8 proto, const u8 *h) {
    return proto == PROTO_HTTP ? is_http_request(h) : true;
}

static __always_inline bool ends_exchange(u8 proto, const u8 *h, void *buf) {
    if (proto != PROTO_HTTP)
        return true;
    if (!is_http_response(h))
        return false;
    /* "HTTP/1.1 1xx": interim (100 Continue); the final response follows. */
    u8 code = 0;
    bpf_probe_read_user(&code, 1, buf + 9);
    return code != '1';
}

static __always_inline void stash_request(u64 key, void *buf, u64 len) {
    struct req_buf *rb = req_bufs.lookup(&key);
    if (!rb) {
        u32 zero = 0;
        struct req_buf *empty = scratch_req.lookup(&zero);
        if (!empty)
            return;
        req_bufs.update(&key, empty);
        rb = req_bufs.lookup(&key);
        if (!rb) {
            count(CNT_REQ_BUF_FULL);
            return;
        }
    }
    u32 n = len < MAX_REQ ? len : MAX_REQ;
    rb->len = n;
    bpf_probe_read_user(rb->data, n, buf);
}

/* A request that came in several writes (a head split by the app, a small first segment):
 * later writes extend the capture until it holds MAX_REQ bytes. */
static __always_inline void append_request(u64 key, void *buf, u64 len) {
    struct req_buf *rb = req_bufs.lookup(&key);
    if (!rb || rb->len >= MAX_REQ)
        return;
    u32 off = rb->len & (MAX_REQ - 1);
    u32 n = MAX_REQ - off;
    if (n > MAX_APPEND - 1)
        n = MAX_APPEND - 1;
    if (n > len)
        n = len;
    n &= MAX_APPEND - 1;  /* a no-op the verifier can see: off + n < MAX_REQ + MAX_APPEND */
    if (bpf_probe_read_user(&rb->data[off], n, buf) == 0)
        rb->len = off + n;
}

static __always_inline void emit_exchange(struct conn *c, u64 key, void *buf, u64 len, u64 now) {
    struct http_event *e = events.ringbuf_reserve(sizeof(struct http_event));
    count(CNT_EXCHANGES);
    count_probe(c->tls ? SLOT_TLS : c->proto);
    if (!e) {
        count(CNT_EVENTS_LOST);
        return;
    }
    e->type = EV_HTTP;
    e->role = c->role;
    e->proto = c->proto;
    e->tls = c->tls;
    e->pid = key >> 32;
    e->tid = c->req_tid;
    e->fd = (u32)key;
    e->req_bytes = c->req_bytes;
    e->resp_bytes = len;
    e->req_ns = c->req_ns;
    e->resp_ns = now;
    e->parent_ns = c->parent_ns;
    e->parent_fd = c->parent_fd;
    e->laddr = c->laddr;
    e->raddr = c->raddr;
    bpf_get_current_comm(e->comm, sizeof(e->comm));
    e->req_len = 0;
    struct req_buf *rb = req_bufs.lookup(&key);
    if (rb) {
        u32 n = rb->len < MAX_REQ ? rb->len : MAX_REQ;
        e->req_len = n;
        bpf_probe_read_kernel(e->req, sizeof(e->req), rb->data);
    }
    u32 m = len < MAX_RESP ? len : MAX_RESP;
    e->resp_len = m;
    bpf_probe_read_user(e->resp, m, buf);
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

/* Request paths: a server request marks its thread as serving it; a client request started on
 * that thread records it as its parent. Thread-per-request servers (and one-at-a-time event
 * loops) get exact paths; an event loop interleaving requests links a call to the request it
 * read last. W3C traceparent, parsed in user space, links across services where apps send it. */
static __always_inline void note_request_context(u64 id, u64 conn_key, struct conn *c, u64 now) {
    if (c->role == ROLE_SERVER) {
        struct serving s = {.req_ns = now, .fd = (u32)conn_key};
        serving.update(&id, &s);
        return;
    }
    struct serving *s = serving.lookup(&id);
    c->parent_ns = s ? s->req_ns : 0;
    c->parent_fd = s ? s->fd : 0;
}

/* The response went out: the thread is no longer serving it (unless it already took another). */
static __always_inline void end_request_context(u64 id, struct conn *c) {
    struct serving *s = serving.lookup(&id);
    if (s && s->req_ns == c->req_ns)
        serving.delete(&id);
}

/* Data moved on a tracked connection: classify, open or close an exchange. `buf` holds the
 * first `len` bytes of the `ret` the syscall (or SSL_read/SSL_write) moved. */
static __always_inline int handle_data(u64 id, u64 conn_key, struct conn *c, u8 dir, void *buf, u64 len,
                                       long ret) {
    if (c->proto == PROTO_OTHER)
        return 0;
    u8 head[16] = {};
    bool inbound_is_request = c->role == ROLE_SERVER;
    bool request_direction = (dir == DIR_IN) == inbound_is_request;
    u32 n = len < sizeof(head) ? len : sizeof(head);  /* replies can be tiny: Redis ":1\r\n" */
    bool after_short_read = c->short_read;
    if (c->proto == PROTO_UNKNOWN && request_direction)
        c->short_read = len == 4;  /* a length prefix read alone (Kafka brokers do) */
    if (!buf || bpf_probe_read_user(head, n, buf) != 0 || (c->proto == PROTO_UNKNOWN && n < 8)) {
        if (c->pending && request_direction)
            c->req_bytes += ret;
        return 0;
    }
    if (c->proto == PROTO_UNKNOWN) {
        if (c->role == ROLE_UNKNOWN) {  /* seeded from /proc without a listener match */
            c->role = (is_http_request(head) == (dir == DIR_IN)) ? ROLE_SERVER : ROLE_CLIENT;
            inbound_is_request = c->role == ROLE_SERVER;
            request_direction = (dir == DIR_IN) == inbound_is_request;
        }
        c->proto = classify(head, len, request_direction, after_short_read);
        if (c->proto == PROTO_OTHER) {
            count(CNT_UNCLASSIFIED);
            return 0;
        }
    }
    u64 now = bpf_ktime_get_ns();

    if (request_direction) {
        if (c->pending) {
            /* A new HTTP request while one waits: its response went where we cannot see
             * (sendfile-only, splice) or the client pipelines; start over rather than stall. */
            if (c->proto != PROTO_HTTP || !is_http_request(head)) {
                c->req_bytes += ret;  /* body, the rest of the head, or a pipelined request */
                append_request(conn_key, buf, len);
                return 0;
            }
            count(CNT_UNANSWERED);
        }
        if (!starts_request(c->proto, head) || !switched_on(c->proto))
            return 0;
        c->pending = 1;
        c->req_ns = now;
        c->req_bytes = ret;
        c->req_tid = (u32)id;
        note_request_context(id, conn_key, c, now);
        stash_request(conn_key, buf, len);
        return 0;
    }
    if (c->pending && ends_exchange(c->proto, head, buf)) {
        emit_exchange(c, conn_key, buf, len, now);
        c->pending = 0;
        c->requests++;
        if (c->role == ROLE_SERVER)
            end_request_context(id, c);
    }
    return 0;
}

static __always_inline int io_exit(long ret) {
    u64 id = bpf_get_current_pid_tgid();
    struct io_args *io = io_inflight.lookup(&id);
    if (!io)
        return 0;
    struct io_args a = *io;
    io_inflight.delete(&id);
    if (ret <= 0)
        return 0;
    struct conn *c = conns.lookup(&a.conn_key);
    if (!c)
        return 0;
    if (a.dir == DIR_OUT)
        c->bytes_sent += ret;
    else
        c->bytes_recv += ret;
    if (c->tls)
        return 0;  /* ciphertext: the uprobes in ssl_trace.c handle the plaintext */
    u64 len = ret;
    void *buf = first_buffer(&a, &len);
    return handle_data(id, a.conn_key, c, a.dir, buf, len, ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_read) { return io_enter(args->fd, args->buf, IO_BUF, DIR_IN); }
TRACEPOINT_PROBE(syscalls, sys_exit_read) { return io_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_recvfrom) { return io_enter(args->fd, args->ubuf, IO_BUF, DIR_IN); }
TRACEPOINT_PROBE(syscalls, sys_exit_recvfrom) { return io_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_readv) { return io_enter(args->fd, (void *)args->vec, IO_IOV, DIR_IN); }
TRACEPOINT_PROBE(syscalls, sys_exit_readv) { return io_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_recvmsg) { return io_enter(args->fd, args->msg, IO_MSG, DIR_IN); }
TRACEPOINT_PROBE(syscalls, sys_exit_recvmsg) { return io_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_write) { return io_enter(args->fd, (void *)args->buf, IO_BUF, DIR_OUT); }
TRACEPOINT_PROBE(syscalls, sys_exit_write) { return io_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_sendto) { return io_enter(args->fd, args->buff, IO_BUF, DIR_OUT); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendto) { return io_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_writev) { return io_enter(args->fd, (void *)args->vec, IO_IOV, DIR_OUT); }
TRACEPOINT_PROBE(syscalls, sys_exit_writev) { return io_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg) { return io_enter(args->fd, args->msg, IO_MSG, DIR_OUT); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendmsg) { return io_exit(args->ret); }

/* ---- close: the connection's totals leave as one flow event ---- */

TRACEPOINT_PROBE(syscalls, sys_enter_close) {
    u64 id = bpf_get_current_pid_tgid();
    u64 key = conn_key(id >> 32, (u32)args->fd);
    struct conn *c = conns.lookup(&key);
    if (!c)
        return 0;
    req_bufs.delete(&key);
    u32 tgid = id >> 32;
    struct last_fork *last = servers.lookup(&tgid);
    if (last && last->ns >= c->opened_ns && c->bytes_sent == 0 && c->bytes_recv == 0) {
        /* Accepted, forked, closed unused: a hand-off to the child forked since (one per
         * connection), not the end of a connection; unless that child already took it over. */
        u64 child_key = conn_key(last->child, (u32)args->fd);
        if (!conns.lookup(&child_key))
            handed_off.update(&child_key, c);
        conns.delete(&key);
        return 0;
    }
    count(CNT_FLOWS);
    if (!switched_on(SLOT_FLOWS)) {
        conns.delete(&key);
        return 0;
    }
    count_probe(SLOT_FLOWS);
    struct flow_event *e = events.ringbuf_reserve(sizeof(struct flow_event));
    if (e) {
        e->type = EV_FLOW;
        e->role = c->role;
        e->proto = c->proto;
        e->tls = c->tls;
        e->pid = id >> 32;
        e->fd = args->fd;
        e->requests = c->requests;
        e->opened_ns = c->opened_ns;
        e->closed_ns = bpf_ktime_get_ns();
        e->bytes_sent = c->bytes_sent;
        e->bytes_recv = c->bytes_recv;
        e->laddr = c->laddr;
        e->raddr = c->raddr;
        bpf_get_current_comm(e->comm, sizeof(e->comm));
        events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    } else {
        count(CNT_FLOWS_LOST);
    }
    conns.delete(&key);
    return 0;
}
