/* block_io.c: block I/O bytes, operations and latency per submitting process (tgid).
 *
 * Hooks (stable tracepoints only; no kprobes, no kernel struct reads):
 *   block:block_io_start     (kernel >= 6.5) a request is created for a bio, in the task that
 *                            submitted it: who asked for the I/O
 *   block:block_rq_insert    (older kernels, instead of block_io_start) a request enters the
 *                            I/O scheduler, usually still in the submitting task
 *   block:block_rq_issue     the request goes to the driver: latency is measured from here
 *   block:block_rq_complete  the device finished it: bytes, operation and latency are counted
 * The loader picks block_io_start when BPF.tracepoint_exists says it is there (HAVE_IO_START).
 *
 * Why this shape:
 * - block_rq_issue often runs in a kworker (the request was queued, then dispatched from the
 *   hardware queue's work), so attributing at issue would charge kworkers for everyone's I/O. The
 *   submitter's tgid is taken where the request is created and carried to its completion in
 *   `inflight`, keyed by (device, sector) since the tracepoints show no request pointer.
 * - Bytes come from block_rq_complete (what the device did), not from the start: bios merged into
 *   a request after it was created would be missed there.
 * - I/O is thousands of events per second, not millions: a few map operations each are cheap.
 *   Totals live in `totals`, keyed by tgid, taken and deleted by the worker in one batch every
 *   second (see sched.c for why the map is not preallocated).
 *
 * Caveats (best effort, counted rather than hidden):
 * - Buffered writes are submitted by the writeback kworker, not by the process that dirtied the
 *   pages: they are charged to the kworker (direct and synchronous I/O are charged exactly).
 * - A front merge moves a request's first sector, and a partial completion advances it: such a
 *   completion finds no start and is counted in CNT_UNMATCHED (its bytes are not charged).
 * - Only reads and writes are counted; discards, flushes and other operations are not.
 * - The worker's own I/O (SELF_TGID) is not charged.
 */
#define SELF_TGID __SELF_TGID__
#define HAVE_IO_START __HAVE_IO_START__
#define INFLIGHT_MAX 16384
#define TOTALS_MAX 16384
#define SECTOR_SHIFT 9

enum counter {
    CNT_IOS = 0,              /* reads and writes completed and charged */
    CNT_UNMATCHED = 1,        /* completions with no start seen (before attach, merged, partial) */
    CNT_TOTALS_FULL = 2,
    CNT_MAX = 3,
};

struct rq_key {
    u32 dev;
    u32 pad;
    u64 sector;
};

struct rq_start {
    u64 start_ns;
    u64 issue_ns;             /* 0 until block_rq_issue */
    u32 tgid;
    u32 pad;
    char comm[16];
};

/* Mirrored by probes/programs/block_io.py Totals. */
struct totals {
    u64 read_bytes;
    u64 write_bytes;
    u64 wait_ns;              /* issue (or start, when issue was not seen) to completion */
    u32 read_ops;
    u32 write_ops;
    char comm[16];            /* the submitter's, names a process gone before the worker looks */
};

BPF_TABLE("lru_hash", struct rq_key, struct rq_start, inflight, INFLIGHT_MAX);
BPF_F_TABLE("hash", u32, struct totals, totals, TOTALS_MAX, BPF_F_NO_PREALLOC);
BPF_PERCPU_ARRAY(counters, u64, CNT_MAX);

static __always_inline void count(u32 idx) {
    u64 *v = counters.lookup(&idx);
    if (v)
        (*v)++;
}

/* A request created (or inserted) in the task that wants the I/O: remember who. */
static __always_inline int request_starts(u32 dev, u64 sector) {
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (tgid == SELF_TGID)
        return 0;
    struct rq_key key = {.dev = dev, .sector = sector};
    struct rq_start s = {.start_ns = bpf_ktime_get_ns(), .tgid = tgid};
    bpf_get_current_comm(s.comm, sizeof(s.comm));
    inflight.update(&key, &s);
    return 0;
}

#if HAVE_IO_START
TRACEPOINT_PROBE(block, block_io_start) { return request_starts(args->dev, args->sector); }
#else
TRACEPOINT_PROBE(block, block_rq_insert) { return request_starts(args->dev, args->sector); }
#endif

/* Requests that skipped the start hook (issued directly) are started here, in the issuing task. */
TRACEPOINT_PROBE(block, block_rq_issue) {
    struct rq_key key = {.dev = args->dev, .sector = args->sector};
    u64 now = bpf_ktime_get_ns();
    struct rq_start *s = inflight.lookup(&key);
    if (s) {
        s->issue_ns = now;
        return 0;
    }
    request_starts(args->dev, args->sector);
    s = inflight.lookup(&key);
    if (s)
        s->issue_ns = now;
    return 0;
}

TRACEPOINT_PROBE(block, block_rq_complete) {
    struct rq_key key = {.dev = args->dev, .sector = args->sector};
    struct rq_start *s = inflight.lookup(&key);
    if (!s) {
        count(CNT_UNMATCHED);
        return 0;
    }
    struct rq_start started = *s;
    inflight.delete(&key);
    char op = args->rwbs[0] == 'F' ? args->rwbs[1] : args->rwbs[0];  /* "FWS": flush, then write */
    if (op != 'R' && op != 'W')
        return 0;
    u64 bytes = (u64)args->nr_sector << SECTOR_SHIFT;
    if (bytes == 0)
        return 0;  /* a flush that carries the write flag ("FWS"), no data */
    u64 from = started.issue_ns ? started.issue_ns : started.start_ns;
    u64 now = bpf_ktime_get_ns();
    struct totals *t = totals.lookup(&started.tgid);
    if (!t) {
        struct totals fresh = {};
        __builtin_memcpy(fresh.comm, started.comm, sizeof(fresh.comm));
        totals.insert(&started.tgid, &fresh);
        t = totals.lookup(&started.tgid);
        if (!t) {
            count(CNT_TOTALS_FULL);
            return 0;
        }
    }
    if (op == 'R') {
        t->read_bytes += bytes;
        t->read_ops++;
    } else {
        t->write_bytes += bytes;
        t->write_ops++;
    }
    t->wait_ns += now > from ? now - from : 0;
    count(CNT_IOS);
    return 0;
}
