/* tcp_stats.c: TCP health per connection: failed connects, retransmits, resets.
 *
 * Hooks (stable tracepoints only; no kprobes, no kernel struct reads):
 *   sock:inet_sock_set_state   CLOSE->SYN_SENT: a connect, in the connecting task (its tgid);
 *                              SYN_SENT->CLOSE: the connect failed; any ->CLOSE: the end
 *   tcp:tcp_retransmit_skb     a segment (or a SYN) was sent again
 *   tcp:tcp_send_reset         this host reset a connection
 *   tcp:tcp_receive_reset      the peer reset it
 * Sockets are keyed by `skaddr`, the socket's kernel address as the tracepoints print it (only
 * compared, never dereferenced).
 *
 * Why this shape:
 * - Healthy connections cost one insert at connect and one lookup and delete at close (server
 *   sockets only the lookup); only a connection that failed, retransmitted or was reset produces
 *   an event, when it closes, so the ring buffer carries problems, not traffic.
 * - Totals (connects, failures, retransmits, resets, closes) are counted in `counters` before
 *   anything can be lost, so they stay exact when the ring buffer is full; lost events are counted.
 * - Events are submitted with BPF_RB_NO_WAKEUP; the worker drains the ring buffer on its timer.
 * - RTT (tcp:tcp_probe's srtt) is not collected: that tracepoint fires for every segment received
 *   on every connection, a per-packet cost for one number (see probes/programs/tcp_stats.py).
 *
 * Caveats (best effort, counted rather than hidden):
 * - The tgid is known only for connections this host opened after attach (connect runs in the
 *   process); accepted connections are set up in softirq: user space names them by listening port.
 * - A connect that fails without a reset received ("timeout") also covers connects given up by
 *   the application and ICMP unreachable errors.
 * - An abortive close (SO_LINGER 0, or close with unread data) sends its reset after the socket
 *   reached CLOSE: it is reported in an event of its own, with the addresses of the reset.
 * - Resets sent for segments that match no socket (a closed port) count in the totals only.
 * - A worker scoped to a cgroup (CGROUP_ID) reports connections its processes open (checked at
 *   connect) and, in user space, those its processes accept; the totals count the whole machine.
 */
#include "common.h"

#define SELF_TGID __SELF_TGID__
#define CGROUP_ID __CGROUP_ID__           /* cgroup v2 id the worker is scoped to; 0: whole host */
#define CGROUP_LEVEL __CGROUP_LEVEL__
#define MAX_SOCKETS 65536
#define TCP_LISTEN 10

enum counter {
    CNT_CONNECTS = 0,
    CNT_REFUSED = 1,          /* connects answered by a reset */
    CNT_TIMEOUTS = 2,         /* connects that failed otherwise */
    CNT_RETRANSMITS = 3,
    CNT_RESETS_SENT = 4,
    CNT_RESETS_RECEIVED = 5,
    CNT_CLOSES = 6,           /* connections closed (listeners excluded) */
    CNT_EVENTS = 7,           /* health events produced */
    CNT_EVENTS_LOST = 8,      /* ring buffer full: counted above, record lost */
    CNT_MAX = 9,
};

/* tcp_send_reset's `reason` (kernel >= 6.10) has this type, which no header we include defines;
 * BCC generates the argument struct from the tracepoint's format, so it must be complete. */
enum sk_rst_reason { OBSWEB_RST_REASON_UNUSED = 0 };

enum failure { FAIL_NONE = 0, FAIL_REFUSED = 1, FAIL_TIMEOUT = 2 };

struct sk_health {
    u32 tgid;                 /* the connecting process, 0 when not seen */
    u32 retransmits;
    u32 resets_sent;
    u32 resets_received;
    u32 foreign;              /* opened by a process outside the worker's cgroup: never reported */
};

/* Mirrored by probes/programs/tcp_stats.py HealthEvent. */
struct health_event {
    u64 ts;
    u32 tgid;
    u32 retransmits;
    u32 resets_sent;
    u32 resets_received;
    u8 failure;
    u8 pad[7];
    struct addr laddr;
    struct addr raddr;
};

BPF_RINGBUF_OUTPUT(events, __RINGBUF_PAGES__);
BPF_TABLE("lru_hash", u64, struct sk_health, sockets, MAX_SOCKETS);
BPF_PERCPU_ARRAY(counters, u64, CNT_MAX);

static __always_inline void count(u32 idx) {
    u64 *v = counters.lookup(&idx);
    if (v)
        (*v)++;
}

/* The socket's entry, created on its first problem when connect was not seen. */
static __always_inline struct sk_health *entry_of(u64 sk) {
    struct sk_health *h = sockets.lookup(&sk);
    if (h)
        return h;
    struct sk_health fresh = {};
    sockets.insert(&sk, &fresh);
    return sockets.lookup(&sk);
}

/* A struct sockaddr_in / sockaddr_in6 as tcp_send_reset prints it (port in network order). */
static __always_inline void sockaddr_addr(struct addr *out, const u8 *sa) {
    struct user_sockaddr s = {};
    __builtin_memcpy(&s, sa, sizeof(s));
    out->family = s.family;
    out->port = bpf_ntohs(s.port_be);
    if (s.family == AF_INET)
        __builtin_memcpy(out->ip, &s.flowinfo_or_ipv4, 4);
    else
        __builtin_memcpy(out->ip, s.ipv6, 16);
}

static __always_inline struct health_event *reserve(void) {
    count(CNT_EVENTS);
    struct health_event *e = events.ringbuf_reserve(sizeof(struct health_event));
    if (!e) {
        count(CNT_EVENTS_LOST);
        return 0;
    }
    e->ts = bpf_ktime_get_ns();
    e->pad[0] = e->pad[1] = e->pad[2] = e->pad[3] = e->pad[4] = e->pad[5] = e->pad[6] = 0;
    return e;
}

TRACEPOINT_PROBE(sock, inet_sock_set_state) {
    if (args->protocol != IPPROTO_TCP_NUM)
        return 0;
    u64 sk = (u64)args->skaddr;
    if (args->oldstate == TCP_CLOSE && args->newstate == TCP_SYN_SENT) {
        count(CNT_CONNECTS);
        struct sk_health h = {.tgid = bpf_get_current_pid_tgid() >> 32};
        /* Scoped here, at connect in the process: it may be gone before user space could ask. */
        h.foreign = h.tgid == SELF_TGID ||
                    (CGROUP_ID != 0 && bpf_get_current_ancestor_cgroup_id(CGROUP_LEVEL) != CGROUP_ID);
        sockets.update(&sk, &h);
        return 0;
    }
    if (args->newstate != TCP_CLOSE || args->oldstate == TCP_LISTEN)
        return 0;
    count(CNT_CLOSES);
    struct sk_health *h = sockets.lookup(&sk);
    u8 failure = FAIL_NONE;
    if (args->oldstate == TCP_SYN_SENT) {
        failure = h && h->resets_received ? FAIL_REFUSED : FAIL_TIMEOUT;
        count(failure == FAIL_REFUSED ? CNT_REFUSED : CNT_TIMEOUTS);
    }
    if (!h)
        return 0;  /* a connection that never had a problem and was not opened here */
    struct sk_health seen = *h;
    sockets.delete(&sk);
    if (seen.foreign)
        return 0;
    if (failure == FAIL_NONE && !seen.retransmits && !seen.resets_sent && !seen.resets_received)
        return 0;
    struct health_event *e = reserve();
    if (!e)
        return 0;
    e->tgid = seen.tgid;
    e->retransmits = seen.retransmits;
    e->resets_sent = seen.resets_sent;
    e->resets_received = seen.resets_received;
    e->failure = failure;
    tp_addr(&e->laddr, args->family, args->sport, args->saddr, args->saddr_v6);
    tp_addr(&e->raddr, args->family, args->dport, args->daddr, args->daddr_v6);
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_retransmit_skb) {
    count(CNT_RETRANSMITS);
    struct sk_health *h = entry_of((u64)args->skaddr);
    if (h)
        h->retransmits++;
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_receive_reset) {
    count(CNT_RESETS_RECEIVED);
    struct sk_health *h = entry_of((u64)args->skaddr);
    if (h)
        h->resets_received++;
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_send_reset) {
    count(CNT_RESETS_SENT);
    u64 sk = (u64)args->skaddr;
    if (!sk)
        return 0;  /* a segment for no socket: a closed port, a connection long gone */
    if (args->state != TCP_CLOSE) {
        struct sk_health *h = entry_of(sk);
        if (h)
            h->resets_sent++;
        return 0;
    }
    /* An abortive close: the socket already went to CLOSE (and reported there), then reset. */
    struct health_event *e = reserve();
    if (!e)
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;  /* close() runs in the process */
    e->tgid = tgid == SELF_TGID ? 0 : tgid;
    e->retransmits = 0;
    e->resets_sent = 1;
    e->resets_received = 0;
    e->failure = FAIL_NONE;
    sockaddr_addr(&e->laddr, args->saddr);
    sockaddr_addr(&e->raddr, args->daddr);
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return 0;
}
