/*
 * A disk with a volatile write cache, as an LD_PRELOAD shim, for the power-cut tests
 * (tests/powercut.rs). In the spirit of SQLite's crash-test VFS (src/test6.c), but below the
 * whole process: SQLite's unix VFS, our own fsync of the WAL and the directory all go through
 * it, so the agent is tested exactly as built.
 *
 * Files whose path starts with POWERCUT_DIR are tracked (except SQLite's `-shm`, which is
 * rebuilt from the WAL after every crash and never needs to be durable). Every write to a
 * tracked file goes through to the real file at once (the process reads what it wrote, as it
 * would from the page cache), and is also remembered, with the old content of each 512-byte
 * sector it touched, until an fsync/fdatasync of that file makes it durable. A directory
 * fsync makes the names of the files created in it durable.
 *
 * At a cut (the POWERCUT_AFTER-th write, truncate or sync of a tracked file; or "cut" in the
 * control file) the shim decides, from POWERCUT_SEED, what of the not yet durable writes the
 * "disk" kept, rewrites the files to exactly that, and ends the process at once with status
 * 137, like a SIGKILL. What was durable is never changed. One of five patterns per cut:
 *   0 drop: nothing unsynced survives;
 *   1 keep: everything survives;
 *   2 prefix: the writes up to a random point in time survive (an in-order device);
 *   3 scatter: each sector independently holds its synced content or any later version of
 *     it: writes kept out of order, torn at sector granularity;
 *   4 prefix plus scatter: a prefix, and some later sectors flushed ahead of it.
 * A file's size is its synced size or its newest size; sectors grown into but not kept read
 * as zeros. With probability 1/8 the last write, where it is kept, holds garbage in one
 * sector (the sector being written when the power went) - in the bytes it was writing only:
 * like SQLite (SQLITE_POWERSAFE_OVERWRITE, its default), the model assumes a device never
 * damages bytes it was not asked to write. A file created since its directory was last synced
 * loses its name with probability 1/2.
 *
 * POWERCUT_CTL names an optional control file for fault injection into a running process
 * (the daemon tests): its first word is read whenever its mtime changes:
 *   ok      no fault;
 *   enospc  every write or truncate of a tracked file fails with ENOSPC (a full disk);
 *   erofs   every write or truncate of a tracked file fails with EROFS (a read-only file
 *           system, or a file a non-root agent may not write);
 *   eio     every write, truncate and sync of a tracked file fails with EIO (a dying card);
 *   cut     cut the power at the next write, truncate or sync of a tracked file.
 * POWERCUT_LOG names an optional file that gets one line per cut (what was decided), for
 * replaying a failing seed.
 *
 * Only what a fresh Debian machine with a C compiler has: libc and libdl.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define SECTOR 512
#define MAX_FILES 64
#define MAX_FDS 4096

struct op {
    uint64_t gseq;    /* position in time, over all files */
    off_t off;        /* write offset, or the new size of a truncate */
    size_t len;       /* 0 for a truncate */
    unsigned char *data;
};

struct pre {
    off_t sector;
    unsigned char data[SECTOR];
};

struct tracked {
    int used;
    dev_t dev;
    ino_t ino;
    char path[PATH_MAX];
    int keep_fd;            /* our own descriptor: the cut can be applied after the caller closed */
    off_t synced_size;
    off_t cur_size;
    int name_unsynced;      /* created since its directory was last synced */
    struct op *ops;
    size_t nops, capops;
    struct pre *pres;       /* content of each touched sector when it was last durable */
    size_t npres, cappres;
    long *index;            /* open addressing: sector -> position in pres, -1 empty */
    size_t capindex;
};

enum fault { FAULT_NONE, FAULT_ENOSPC, FAULT_EIO, FAULT_EROFS, FAULT_CUT };

/* The errno a failing write or truncate gets. */
static int fault_errno(enum fault f) {
    return f == FAULT_EIO ? EIO : f == FAULT_EROFS ? EROFS : ENOSPC;
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct tracked files[MAX_FILES];
static signed char fd_kind[MAX_FDS];  /* 0 untracked, 1 file, 2 directory */
static short fd_file[MAX_FDS];
static char *dir_path[MAX_FDS];       /* the path of a tracked directory descriptor */
static char prefix[PATH_MAX];
static size_t prefix_len;
static long cut_after;               /* 0: never */
static long calls;
static uint64_t rng_state;
static uint64_t gseq;
static char ctl_path[PATH_MAX];
static struct timespec ctl_mtime;
static enum fault fault;
static char log_path[PATH_MAX];

static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_close)(int);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_rename)(const char *, const char *);
static int (*real_unlink)(const char *);

static void die(const char *what) {
    char msg[256];
    int n = snprintf(msg, sizeof msg, "powercut shim: %s\n", what);
    if (n > 0) syscall(SYS_write, 2, msg, (size_t)n);
    abort();
}

static void *need(const char *name) {
    void *f = dlsym(RTLD_NEXT, name);
    if (!f) die(name);
    return f;
}

__attribute__((constructor)) static void init(void) {
    real_open = need("open");
    real_open64 = need("open64");
    real_openat = need("openat");
    real_openat64 = need("openat64");
    real_close = need("close");
    real_write = need("write");
    real_pwrite = need("pwrite");
    real_pwrite64 = need("pwrite64");
    real_writev = need("writev");
    real_pwritev = need("pwritev");
    real_ftruncate = need("ftruncate");
    real_ftruncate64 = need("ftruncate64");
    real_fsync = need("fsync");
    real_fdatasync = need("fdatasync");
    real_rename = need("rename");
    real_unlink = need("unlink");
    const char *dir = getenv("POWERCUT_DIR");
    if (dir && *dir) {
        snprintf(prefix, sizeof prefix, "%s", dir);
        prefix_len = strlen(prefix);
    }
    const char *after = getenv("POWERCUT_AFTER");
    cut_after = after ? atol(after) : 0;
    const char *seed = getenv("POWERCUT_SEED");
    rng_state = seed ? strtoull(seed, NULL, 0) : 1;
    rng_state ^= 0x9E3779B97F4A7C15ull;
    const char *ctl = getenv("POWERCUT_CTL");
    if (ctl) snprintf(ctl_path, sizeof ctl_path, "%s", ctl);
    const char *lg = getenv("POWERCUT_LOG");
    if (lg) snprintf(log_path, sizeof log_path, "%s", lg);
}

/* splitmix64 */
static uint64_t rnd(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t below(uint64_t n) { return n ? rnd() % n : 0; }

static int tracked_path(const char *path) {
    if (!prefix_len || !path || strncmp(path, prefix, prefix_len) != 0) return 0;
    size_t n = strlen(path);
    return !(n >= 4 && strcmp(path + n - 4, "-shm") == 0);
}

/* The control file, re-read when it changed. */
static void poll_ctl(void) {
    if (!ctl_path[0]) return;
    struct stat st;
    if (stat(ctl_path, &st) != 0) return;
    if (st.st_mtim.tv_sec == ctl_mtime.tv_sec && st.st_mtim.tv_nsec == ctl_mtime.tv_nsec) return;
    ctl_mtime = st.st_mtim;
    int fd = real_open(ctl_path, O_RDONLY);
    if (fd < 0) return;
    char word[16] = {0};
    ssize_t n = read(fd, word, sizeof word - 1);
    real_close(fd);
    if (n <= 0) return;
    if (strncmp(word, "enospc", 6) == 0) fault = FAULT_ENOSPC;
    else if (strncmp(word, "eio", 3) == 0) fault = FAULT_EIO;
    else if (strncmp(word, "erofs", 5) == 0) fault = FAULT_EROFS;
    else if (strncmp(word, "cut", 3) == 0) fault = FAULT_CUT;
    else fault = FAULT_NONE;
}

static struct tracked *file_of(int fd) {
    if (fd < 0 || fd >= MAX_FDS || fd_kind[fd] != 1) return NULL;
    return &files[fd_file[fd]];
}

static void *grow(void *p, size_t *cap, size_t need_n, size_t size) {
    if (need_n <= *cap) return p;
    size_t c = *cap ? *cap : 16;
    while (c < need_n) c *= 2;
    void *q = realloc(p, c * size);
    if (!q) die("out of memory");
    *cap = c;
    return q;
}

static struct pre *find_pre(struct tracked *t, off_t sector) {
    if (!t->capindex) return NULL;
    size_t mask = t->capindex - 1;
    for (size_t i = (size_t)(sector * 2654435761u) & mask;; i = (i + 1) & mask) {
        long at = t->index[i];
        if (at < 0) return NULL;
        if (t->pres[at].sector == sector) return &t->pres[at];
    }
}

static void index_pre(struct tracked *t, long at) {
    size_t mask = t->capindex - 1;
    size_t i = (size_t)(t->pres[at].sector * 2654435761u) & mask;
    while (t->index[i] >= 0) i = (i + 1) & mask;
    t->index[i] = at;
}

/* Remember what `sector` held when it was last durable, before it is first changed. */
static void remember_sector(struct tracked *t, off_t sector) {
    if (find_pre(t, sector)) return;
    t->pres = grow(t->pres, &t->cappres, t->npres + 1, sizeof *t->pres);
    struct pre *p = &t->pres[t->npres];
    p->sector = sector;
    memset(p->data, 0, SECTOR);
    off_t at = sector * SECTOR;
    if (at < t->cur_size) {
        ssize_t n = pread(t->keep_fd, p->data, SECTOR, at);
        if (n < 0) die("pread of a sector");
    }
    t->npres++;
    if (t->npres * 2 > t->capindex) {
        size_t c = t->capindex ? t->capindex * 2 : 64;
        while (t->npres * 2 > c) c *= 2;
        free(t->index);
        t->index = malloc(c * sizeof *t->index);
        if (!t->index) die("out of memory");
        t->capindex = c;
        for (size_t i = 0; i < c; i++) t->index[i] = -1;
        for (size_t i = 0; i < t->npres; i++) index_pre(t, (long)i);
    } else {
        index_pre(t, (long)(t->npres - 1));
    }
}

static void record(struct tracked *t, off_t off, const void *buf, size_t len) {
    if (len == 0) return;
    for (off_t s = off / SECTOR; s <= (off_t)((off + (off_t)len - 1) / SECTOR); s++) remember_sector(t, s);
    t->ops = grow(t->ops, &t->capops, t->nops + 1, sizeof *t->ops);
    struct op *o = &t->ops[t->nops++];
    o->gseq = gseq++;
    o->off = off;
    o->len = len;
    o->data = malloc(len);
    if (!o->data) die("out of memory");
    memcpy(o->data, buf, len);
    if (off + (off_t)len > t->cur_size) t->cur_size = off + (off_t)len;
}

static void record_truncate(struct tracked *t, off_t size) {
    /* Shrinking: the cut may find the old bytes still there. */
    for (off_t s = size / SECTOR; s * SECTOR < t->cur_size; s++) remember_sector(t, s);
    t->ops = grow(t->ops, &t->capops, t->nops + 1, sizeof *t->ops);
    struct op *o = &t->ops[t->nops++];
    o->gseq = gseq++;
    o->off = size;
    o->len = 0;
    o->data = NULL;
    t->cur_size = size;
}

static void forget(struct tracked *t) {
    for (size_t i = 0; i < t->nops; i++) free(t->ops[i].data);
    t->nops = 0;
    t->npres = 0;
    for (size_t i = 0; i < t->capindex; i++) t->index[i] = -1;
}

static void synced(struct tracked *t) {
    forget(t);
    t->synced_size = t->cur_size;
}

static void log_line(const char *fmt, ...) {
    if (!log_path[0]) return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    int fd = real_open(log_path, O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd < 0 || n <= 0) return;
    real_write(fd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    real_close(fd);
}

/* The power goes: every tracked file is rewritten to what the disk kept; the process ends. */
__attribute__((noreturn)) static void cut(const char *at) {
    int pattern = (int)below(5);
    uint64_t point = below(gseq + 1);
    int garbage = below(8) == 0;
    log_line("cut at=%s call=%ld pattern=%d point=%llu/%llu garbage=%d\n", at, calls, pattern,
             (unsigned long long)point, (unsigned long long)gseq, garbage);
    uint64_t last = gseq ? gseq - 1 : 0;
    for (int f = 0; f < MAX_FILES; f++) {
        struct tracked *t = &files[f];
        if (!t->used) continue;
        if (t->name_unsynced && below(2) == 0) {
            log_line("  %s: name lost\n", t->path);
            real_unlink(t->path);
            continue;
        }
        /* The size after the last kept operation (in-order patterns), else old or new. */
        off_t size;
        if (pattern == 0) {
            size = t->synced_size;
        } else if (pattern == 1) {
            size = t->cur_size;
        } else if (pattern == 2 || pattern == 4) {
            size = t->synced_size;
            for (size_t i = 0; i < t->nops && t->ops[i].gseq < point; i++) {
                struct op *o = &t->ops[i];
                if (o->len == 0) size = o->off;
                else if (o->off + (off_t)o->len > size) size = o->off + (off_t)o->len;
            }
        } else {
            size = below(2) ? t->cur_size : t->synced_size;
        }
        unsigned char sector[SECTOR];
        size_t kept_sectors = 0, dropped_sectors = 0;
        for (size_t p = 0; p < t->npres; p++) {
            struct pre *pr = &t->pres[p];
            off_t lo = pr->sector * SECTOR, hi = lo + SECTOR;
            /* The versions of this sector: the operations touching it, in time order. */
            size_t m = 0, before_point = 0;
            for (size_t i = 0; i < t->nops; i++) {
                struct op *o = &t->ops[i];
                int touches = o->len ? (o->off < hi && o->off + (off_t)o->len > lo) : (o->off < hi);
                if (!touches) continue;
                m++;
                if (o->gseq < point) before_point++;
            }
            size_t k;
            switch (pattern) {
            case 0: k = 0; break;
            case 1: k = m; break;
            case 2: k = before_point; break;
            case 3: k = below(m + 1); break;
            default:
                k = before_point;
                if (m > k && below(3) == 0) k += 1 + below(m - k);
            }
            memcpy(sector, pr->data, SECTOR);
            size_t applied = 0;
            off_t torn_lo = 0, torn_hi = 0; /* the bytes the last write put in this sector */
            for (size_t i = 0; i < t->nops && applied < k; i++) {
                struct op *o = &t->ops[i];
                int touches = o->len ? (o->off < hi && o->off + (off_t)o->len > lo) : (o->off < hi);
                if (!touches) continue;
                applied++;
                if (o->len == 0) {
                    if (o->off <= lo) memset(sector, 0, SECTOR);
                    else memset(sector + (o->off - lo), 0, (size_t)(hi - o->off));
                } else {
                    off_t a = o->off > lo ? o->off : lo;
                    off_t b = o->off + (off_t)o->len < hi ? o->off + (off_t)o->len : hi;
                    memcpy(sector + (a - lo), o->data + (a - o->off), (size_t)(b - a));
                    if (o->gseq == last) {
                        torn_lo = a - lo;
                        torn_hi = b - lo;
                    }
                }
            }
            if (garbage && torn_hi > torn_lo) {
                for (off_t i = torn_lo; i < torn_hi; i++) sector[i] = (unsigned char)rnd();
                garbage = 0;
            }
            if (k == m) kept_sectors++; else dropped_sectors++;
            if (lo < size) {
                size_t n = hi <= size ? SECTOR : (size_t)(size - lo);
                if (pwrite(t->keep_fd, sector, n, lo) != (ssize_t)n) die("pwrite at the cut");
            }
        }
        if (real_ftruncate(t->keep_fd, size) != 0) die("ftruncate at the cut");
        log_line("  %s: size %lld (synced %lld, newest %lld), sectors kept %zu, not %zu\n", t->path,
                 (long long)size, (long long)t->synced_size, (long long)t->cur_size, kept_sectors,
                 dropped_sectors);
    }
    syscall(SYS_exit_group, 137);
    __builtin_unreachable();
}

/* Counts a write, truncate or sync of a tracked file; returns the fault to apply to it. */
static enum fault mutating(const char *what, int is_sync) {
    calls++;
    poll_ctl();
    if (fault == FAULT_CUT) {
        if (is_sync) cut(what);
        return FAULT_CUT; /* applied after the write is recorded */
    }
    if (cut_after && calls >= cut_after) {
        if (is_sync) cut(what);
        return FAULT_CUT;
    }
    if (fault == FAULT_EIO) return FAULT_EIO;
    if (fault == FAULT_ENOSPC && !is_sync) return FAULT_ENOSPC;
    if (fault == FAULT_EROFS && !is_sync) return FAULT_EROFS;
    return FAULT_NONE;
}

static void track_fd(int fd, const char *path, int created) {
    if (fd < 0 || fd >= MAX_FDS) return;
    fd_kind[fd] = 0;
    if (!tracked_path(path)) return;
    struct stat st;
    if (fstat(fd, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        free(dir_path[fd]);
        dir_path[fd] = strdup(path);
        fd_kind[fd] = 2;
        return;
    }
    if (!S_ISREG(st.st_mode)) return;
    int slot = -1;
    for (int f = 0; f < MAX_FILES; f++) {
        if (files[f].used && files[f].dev == st.st_dev && files[f].ino == st.st_ino) {
            slot = f;
            break;
        }
    }
    if (slot < 0) {
        for (int f = 0; f < MAX_FILES; f++) {
            if (!files[f].used) {
                slot = f;
                break;
            }
        }
        if (slot < 0) die("too many tracked files");
        struct tracked *t = &files[slot];
        t->used = 1;
        t->dev = st.st_dev;
        t->ino = st.st_ino;
        snprintf(t->path, sizeof t->path, "%s", path);
        /* Our own read-write descriptor, whatever the caller's mode, above the fds we map. */
        int own = real_open(path, O_RDWR | O_CLOEXEC);
        if (own < 0) die("cannot open a tracked file read-write");
        t->keep_fd = fcntl(own, F_DUPFD_CLOEXEC, MAX_FDS);
        real_close(own);
        if (t->keep_fd < 0) die("no descriptor above the mapped range");
        t->synced_size = t->cur_size = st.st_size;
        t->name_unsynced = created;
        t->nops = t->npres = 0;
    }
    fd_kind[fd] = 1;
    fd_file[fd] = (short)slot;
}

static int opened(int fd, const char *path, int flags, int existed) {
    if (fd >= 0 && prefix_len) {
        pthread_mutex_lock(&lock);
        track_fd(fd, path, (flags & O_CREAT) && !existed);
        pthread_mutex_unlock(&lock);
    }
    return fd;
}

static int exists(const char *path) {
    struct stat st;
    return prefix_len && tracked_path(path) && stat(path, &st) == 0;
}

#define MODE_ARG                                                                                   \
    mode_t mode = 0;                                                                               \
    if (flags & (O_CREAT | O_TMPFILE)) {                                                           \
        va_list ap;                                                                                \
        va_start(ap, flags);                                                                       \
        mode = (mode_t)va_arg(ap, int);                                                            \
        va_end(ap);                                                                                \
    }

int open(const char *path, int flags, ...) {
    MODE_ARG
    int existed = exists(path);
    return opened(real_open(path, flags, mode), path, flags, existed);
}

int open64(const char *path, int flags, ...) {
    MODE_ARG
    int existed = exists(path);
    return opened(real_open64(path, flags, mode), path, flags, existed);
}

int openat(int dirfd, const char *path, int flags, ...) {
    MODE_ARG
    int existed = exists(path);
    int fd = real_openat(dirfd, path, flags, mode);
    return path[0] == '/' ? opened(fd, path, flags, existed) : fd;
}

int openat64(int dirfd, const char *path, int flags, ...) {
    MODE_ARG
    int existed = exists(path);
    int fd = real_openat64(dirfd, path, flags, mode);
    return path[0] == '/' ? opened(fd, path, flags, existed) : fd;
}

int close(int fd) {
    if (fd >= 0 && fd < MAX_FDS && fd_kind[fd]) {
        pthread_mutex_lock(&lock);
        fd_kind[fd] = 0;
        free(dir_path[fd]);
        dir_path[fd] = NULL;
        pthread_mutex_unlock(&lock);
    }
    return real_close(fd);
}

static ssize_t do_pwrite(ssize_t (*real)(int, const void *, size_t, off_t), int fd, const void *buf,
                         size_t len, off_t off, int positioned) {
    if (fd < 0 || fd >= MAX_FDS || fd_kind[fd] != 1) {
        return positioned ? real(fd, buf, len, off) : real_write(fd, buf, len);
    }
    pthread_mutex_lock(&lock);
    struct tracked *t = file_of(fd);
    enum fault f = mutating("write", 0);
    if (f == FAULT_EIO || f == FAULT_ENOSPC || f == FAULT_EROFS) {
        pthread_mutex_unlock(&lock);
        errno = fault_errno(f);
        return -1;
    }
    if (!positioned) off = lseek(fd, 0, SEEK_CUR);
    record(t, off, buf, len);
    ssize_t n = positioned ? real(fd, buf, len, off) : real_write(fd, buf, len);
    if (f == FAULT_CUT) cut("write");
    pthread_mutex_unlock(&lock);
    return n;
}

ssize_t write(int fd, const void *buf, size_t len) { return do_pwrite(NULL, fd, buf, len, 0, 0); }

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off) {
    return do_pwrite(real_pwrite, fd, buf, len, off, 1);
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off) {
    return do_pwrite(real_pwrite64, fd, buf, len, off, 1);
}

ssize_t writev(int fd, const struct iovec *iov, int n) {
    if (file_of(fd)) die("writev on a tracked file is not modelled");
    return real_writev(fd, iov, n);
}

ssize_t pwritev(int fd, const struct iovec *iov, int n, off_t off) {
    if (file_of(fd)) die("pwritev on a tracked file is not modelled");
    return real_pwritev(fd, iov, n, off);
}

static int do_truncate(int (*real)(int, off_t), int fd, off_t size) {
    if (!file_of(fd)) return real(fd, size);
    pthread_mutex_lock(&lock);
    struct tracked *t = file_of(fd);
    enum fault f = mutating("truncate", 0);
    if (f == FAULT_EIO || f == FAULT_ENOSPC || f == FAULT_EROFS) {
        pthread_mutex_unlock(&lock);
        errno = fault_errno(f);
        return -1;
    }
    record_truncate(t, size);
    int r = real(fd, size);
    if (f == FAULT_CUT) cut("truncate");
    pthread_mutex_unlock(&lock);
    return r;
}

int ftruncate(int fd, off_t size) { return do_truncate(real_ftruncate, fd, size); }
int ftruncate64(int fd, off_t size) { return do_truncate(real_ftruncate64, fd, size); }

static int do_sync(int (*real)(int), int fd) {
    if (fd < 0 || fd >= MAX_FDS || !fd_kind[fd]) return real(fd);
    pthread_mutex_lock(&lock);
    enum fault f = mutating("sync", 1);
    if (f == FAULT_EIO) {
        pthread_mutex_unlock(&lock);
        errno = EIO;
        return -1;
    }
    int r = real(fd);
    if (r == 0) {
        if (fd_kind[fd] == 1) {
            synced(file_of(fd));
        } else if (dir_path[fd]) {
            size_t n = strlen(dir_path[fd]);
            for (int i = 0; i < MAX_FILES; i++) {
                struct tracked *t = &files[i];
                if (t->used && strncmp(t->path, dir_path[fd], n) == 0 && t->path[n] == '/' &&
                    strchr(t->path + n + 1, '/') == NULL)
                    t->name_unsynced = 0;
            }
        }
    }
    pthread_mutex_unlock(&lock);
    return r;
}

int fsync(int fd) { return do_sync(real_fsync, fd); }
int fdatasync(int fd) { return do_sync(real_fdatasync, fd); }

int rename(const char *from, const char *to) {
    int r = real_rename(from, to);
    if (r == 0 && prefix_len) {
        pthread_mutex_lock(&lock);
        for (int i = 0; i < MAX_FILES; i++) {
            if (files[i].used && strcmp(files[i].path, from) == 0)
                snprintf(files[i].path, sizeof files[i].path, "%s", to);
        }
        pthread_mutex_unlock(&lock);
    }
    return r;
}

int unlink(const char *path) {
    int r = real_unlink(path);
    if (r == 0 && prefix_len) {
        pthread_mutex_lock(&lock);
        for (int i = 0; i < MAX_FILES; i++) {
            if (files[i].used && strcmp(files[i].path, path) == 0) {
                /* Gone: nothing of it is left to cut; its descriptors write to nothing. */
                forget(&files[i]);
                real_close(files[i].keep_fd);
                files[i].used = 0;
                for (int fd = 0; fd < MAX_FDS; fd++)
                    if (fd_kind[fd] == 1 && fd_file[fd] == i) fd_kind[fd] = 0;
            }
        }
        pthread_mutex_unlock(&lock);
    }
    return r;
}
