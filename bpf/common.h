/* Shared definitions for obsweb's BPF programs. Layouts here are mirrored by
 * ctypes/struct formats in probes/programs/; change both together.
 *
 * Everything is read from tracepoint arguments and user memory only: no
 * kernel struct reads, so one build runs on any kernel >= 5.8 (ring buffer).
 */
#ifndef OBSWEB_COMMON_H
#define OBSWEB_COMMON_H

#define AF_INET 2
#define AF_INET6 10

/* TCP states as printed by the sock:inet_sock_set_state tracepoint. */
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7
#define IPPROTO_TCP_NUM 6

struct addr {
    u16 family;     /* 0 when unknown (user space fills it from /proc) */
    u16 port;       /* host byte order */
    u8 ip[16];      /* IPv4 in the first 4 bytes */
};

/* An address from a sock or tcp tracepoint's fields (both families are there; `family` picks). */
static __always_inline void tp_addr(struct addr *out, u16 family, u16 port, const u8 *v4, const u8 *v6) {
    out->family = family;
    out->port = port;
    if (family == AF_INET)
        __builtin_memcpy(out->ip, v4, 4);
    else
        __builtin_memcpy(out->ip, v6, 16);
}

/* What sockaddr_in / sockaddr_in6 look like in user memory. */
struct user_sockaddr {
    u16 family;
    u16 port_be;
    u32 flowinfo_or_ipv4;
    u8 ipv6[16];
    u32 scope_id;
};

/* struct user_msghdr up to the iovec pointer (x86_64 and arm64 layout). */
struct user_msghdr_head {
    void *name;
    int namelen;
    int pad;
    void *iov;
    u64 iovlen;
};

struct user_iovec {
    void *base;
    u64 len;
};

#endif
