/*
 * loadgen: a closed-loop HTTP/1.1 load generator for scripts/bench, for the one thing wrk cannot
 * do: HEAD. (wrk's response parser is never told that a request was HEAD, so after a HEAD
 * response with a Content-Length it waits for a body that never comes: 0 requests/s.)
 *
 * One thread, epoll, C connections with one request in flight each (like wrk -t1 -c C), keep-alive,
 * responses parsed just enough to find their end (Content-Length, chunked, or none for HEAD/204/
 * 304), every latency kept and sorted for exact percentiles. Runs for a fixed duration and a
 * bounded number of requests; prints one line:
 *
 *   LOADGEN-JSON {"requests":N,"duration_us":..,"bytes":..,"errors":{..},"latency_us":{..}}
 *
 * Usage: loadgen -c CONNECTIONS -d SECONDS [-m METHOD] [-H 'Name: value']... [-n MAX_REQUESTS]
 *                [-T TIMEOUT_SECONDS] http://127.0.0.1:PORT/path
 * Only plain-HTTP loopback/IPv4 URLs are supported.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX 65536
#define READ_BUF 262144

enum state { S_HEAD, S_BODY, S_CHUNK_SIZE, S_CHUNK_DATA, S_CHUNK_CRLF, S_TRAILER };

struct conn {
    int fd;
    int connected;
    size_t written;
    uint64_t start_ns;
    int in_flight;
    enum state st;
    char head[HEAD_MAX];
    size_t head_len;
    uint64_t left;       /* body or chunk bytes left */
    char line[64];       /* chunk-size / trailer line being read */
    size_t line_len;
    int close_after;
};

static struct sockaddr_in addr;
static char *request;
static size_t request_len;
static int is_head;
static uint64_t timeout_ns = 10ULL * 1000000000ULL;
static uint32_t *lat;
static uint64_t nlat, cap_lat, max_requests = 50000000ULL;
static uint64_t bytes_read, err_connect, err_read, err_write, err_status, err_timeout;
static int epfd;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void die(const char *msg) {
    fprintf(stderr, "loadgen: %s\n", msg);
    exit(2);
}

static void record(uint64_t ns) {
    if (nlat == cap_lat) {
        cap_lat = cap_lat ? cap_lat * 2 : 65536;
        lat = realloc(lat, cap_lat * sizeof *lat);
        if (!lat) die("out of memory");
    }
    uint64_t us = ns / 1000;
    lat[nlat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static void conn_open(struct conn *c) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int r = connect(c->fd, (struct sockaddr *)&addr, sizeof addr);
    if (r < 0 && errno != EINPROGRESS) {
        err_connect++;
    }
    c->connected = (r == 0);
    c->written = 0;
    c->in_flight = 0;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
}

static void conn_reset(struct conn *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    conn_open(c);
}

static void want(struct conn *c, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void begin_request(struct conn *c) {
    c->written = 0;
    c->in_flight = 1;
    c->st = S_HEAD;
    c->head_len = 0;
    c->line_len = 0;
    c->close_after = 0;
    c->start_ns = now_ns();
    want(c, EPOLLOUT | EPOLLIN | EPOLLRDHUP);
}

/* Parses the header block in c->head[0..end). Returns 0, or -1 if malformed. */
static int parse_head(struct conn *c, size_t end) {
    c->head[end] = '\0';
    if (strncmp(c->head, "HTTP/1.", 7) != 0) return -1;
    int status = atoi(c->head + 9);
    if (status >= 400) err_status++;
    int chunked = 0, has_len = 0;
    uint64_t len = 0;
    char *p = strstr(c->head, "\r\n");
    while (p && p[2]) {
        char *line = p + 2;
        p = strstr(line, "\r\n");
        if (!strncasecmp(line, "content-length:", 15)) {
            has_len = 1;
            len = strtoull(line + 15, NULL, 10);
        } else if (!strncasecmp(line, "transfer-encoding:", 18)) {
            char *v = line + 18;
            size_t n = p ? (size_t)(p - v) : strlen(v);
            if (memmem(v, n, "chunked", 7)) chunked = 1;
        } else if (!strncasecmp(line, "connection:", 11)) {
            char *v = line + 11;
            size_t n = p ? (size_t)(p - v) : strlen(v);
            if (memmem(v, n, "close", 5)) c->close_after = 1;
        }
    }
    if (is_head || status == 204 || status == 304 || (status >= 100 && status < 200)) {
        c->st = S_BODY;
        c->left = 0;
    } else if (chunked) {
        c->st = S_CHUNK_SIZE;
        c->line_len = 0;
    } else if (has_len) {
        c->st = S_BODY;
        c->left = len;
    } else {
        return -1; /* read-until-close bodies are not supported */
    }
    return 0;
}

/* Feeds received bytes; returns 1 when the response is complete, 0 if more is needed, -1 on error. */
static int feed(struct conn *c, const char *buf, size_t n) {
    size_t i = 0;
    while (i < n || (c->st == S_BODY && c->left == 0)) {
        switch (c->st) {
        case S_HEAD: {
            size_t take = n - i;
            if (c->head_len + take >= HEAD_MAX) take = HEAD_MAX - 1 - c->head_len;
            if (take == 0) return -1;
            memcpy(c->head + c->head_len, buf + i, take);
            size_t from = c->head_len > 3 ? c->head_len - 3 : 0;
            c->head_len += take;
            char *end = memmem(c->head + from, c->head_len - from, "\r\n\r\n", 4);
            if (!end) {
                i += take;
                break;
            }
            size_t head_end = (size_t)(end - c->head) + 4;
            size_t used = head_end - (c->head_len - take);
            i += used;
            if (parse_head(c, head_end) < 0) return -1;
            break;
        }
        case S_BODY: {
            uint64_t take = n - i < c->left ? n - i : c->left;
            c->left -= take;
            i += take;
            if (c->left == 0) return i == n ? 1 : -1;
            break;
        }
        case S_CHUNK_SIZE:
        case S_TRAILER: {
            char ch = buf[i++];
            if (ch == '\n') {
                c->line[c->line_len] = '\0';
                if (c->line_len && c->line[c->line_len - 1] == '\r') c->line[--c->line_len] = '\0';
                if (c->st == S_TRAILER) {
                    if (c->line_len == 0) return i == n ? 1 : -1;
                } else {
                    uint64_t size = strtoull(c->line, NULL, 16);
                    if (size == 0) {
                        c->st = S_TRAILER;
                    } else {
                        c->st = S_CHUNK_DATA;
                        c->left = size;
                    }
                }
                c->line_len = 0;
            } else if (c->line_len < sizeof c->line - 1) {
                c->line[c->line_len++] = ch;
            }
            break;
        }
        case S_CHUNK_DATA: {
            uint64_t take = n - i < c->left ? n - i : c->left;
            c->left -= take;
            i += take;
            if (c->left == 0) {
                c->st = S_CHUNK_CRLF;
                c->line_len = 0;
            }
            break;
        }
        case S_CHUNK_CRLF:
            if (buf[i++] == '\n') {
                c->st = S_CHUNK_SIZE;
                c->line_len = 0;
            }
            break;
        }
    }
    return 0;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static uint32_t percentile(double p) {
    if (nlat == 0) return 0;
    uint64_t idx = (uint64_t)(p / 100.0 * (double)nlat + 0.5);
    if (idx < 1) idx = 1;
    if (idx > nlat) idx = nlat;
    return lat[idx - 1];
}

int main(int argc, char **argv) {
    int conns = 1, opt;
    double seconds = 1.0;
    const char *method = "GET";
    char headers[8192] = "";
    size_t hlen = 0;
    while ((opt = getopt(argc, argv, "c:d:m:H:n:T:")) != -1) {
        switch (opt) {
        case 'c': conns = atoi(optarg); break;
        case 'd': seconds = atof(optarg); break;
        case 'm': method = optarg; break;
        case 'n': max_requests = strtoull(optarg, NULL, 10); break;
        case 'T': timeout_ns = (uint64_t)(atof(optarg) * 1e9); break;
        case 'H': {
            int w = snprintf(headers + hlen, sizeof headers - hlen, "%s\r\n", optarg);
            if (w < 0 || (size_t)w >= sizeof headers - hlen) die("headers too long");
            hlen += (size_t)w;
            break;
        }
        default: die("usage: loadgen -c N -d SECONDS [-m METHOD] [-H header]... [-n MAX] [-T TIMEOUT] URL");
        }
    }
    if (optind >= argc || conns < 1 || conns > 10000 || seconds <= 0 || seconds > 3600) die("bad arguments");
    const char *url = argv[optind];
    if (strncmp(url, "http://", 7) != 0) die("only http:// URLs");
    const char *hostport = url + 7;
    const char *path = strchr(hostport, '/');
    if (!path) path = "/";
    char host[256];
    size_t hl = (size_t)(path - hostport);
    if (hl == 0 || hl >= sizeof host) die("bad host");
    memcpy(host, hostport, hl);
    host[hl] = '\0';
    char *colon = strrchr(host, ':');
    int port = colon ? atoi(colon + 1) : 80;
    if (colon) *colon = '\0';
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) die("host must be an IPv4 address");
    if (colon) *colon = ':';
    is_head = strcasecmp(method, "HEAD") == 0;
    request = malloc(16384);
    int rl = snprintf(request, 16384, "%s %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", method, path, host, headers);
    if (rl < 0 || rl >= 16384) die("request too long");
    request_len = (size_t)rl;

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll_create1");
    struct conn *cs = calloc((size_t)conns, sizeof *cs);
    if (!cs) die("out of memory");
    static char buf[READ_BUF];
    struct epoll_event *events = calloc((size_t)conns, sizeof *events);
    uint64_t t0 = now_ns();
    uint64_t stop = t0 + (uint64_t)(seconds * 1e9);
    uint64_t started = 0;
    for (int i = 0; i < conns; i++) {
        conn_open(&cs[i]);
        begin_request(&cs[i]);
        started++;
    }
    uint64_t now = t0;
    while (now < stop && nlat < max_requests) {
        int n = epoll_wait(epfd, events, conns, 50);
        now = now_ns();
        for (int k = 0; k < n; k++) {
            struct conn *c = events[k].data.ptr;
            uint32_t ev = events[k].events;
            if (!c->in_flight) continue;
            if (ev & EPOLLOUT && c->written < request_len) {
                ssize_t w = write(c->fd, request + c->written, request_len - c->written);
                if (w < 0) {
                    if (errno == EAGAIN) continue;
                    err_write++;
                    conn_reset(c);
                    begin_request(c);
                    continue;
                }
                c->written += (size_t)w;
                if (c->written == request_len) want(c, EPOLLIN | EPOLLRDHUP);
            }
            if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                for (;;) {
                    ssize_t r = read(c->fd, buf, sizeof buf);
                    if (r < 0 && errno == EAGAIN) break;
                    if (r <= 0) {
                        if (c->written > 0) err_read++;
                        conn_reset(c);
                        begin_request(c);
                        break;
                    }
                    bytes_read += (uint64_t)r;
                    int done = feed(c, buf, (size_t)r);
                    if (done < 0) {
                        err_read++;
                        conn_reset(c);
                        begin_request(c);
                        break;
                    }
                    if (done == 1) {
                        uint64_t t = now_ns();
                        record(t - c->start_ns);
                        c->in_flight = 0;
                        if (t < stop && nlat < max_requests) {
                            if (c->close_after) conn_reset(c);
                            begin_request(c);
                            started++;
                        }
                        break;
                    }
                    if ((size_t)r < sizeof buf) break;
                }
            }
        }
        now = now_ns();
        for (int i = 0; i < conns; i++) {
            if (cs[i].in_flight && now > cs[i].start_ns && now - cs[i].start_ns > timeout_ns) {
                err_timeout++;
                conn_reset(&cs[i]);
                begin_request(&cs[i]);
            }
        }
    }
    uint64_t elapsed = now_ns() - t0;
    qsort(lat, nlat, sizeof *lat, cmp_u32);
    double sum = 0;
    for (uint64_t i = 0; i < nlat; i++) sum += lat[i];
    printf("LOADGEN-JSON {\"requests\":%llu,\"duration_us\":%llu,\"bytes\":%llu,"
           "\"errors\":{\"connect\":%llu,\"read\":%llu,\"write\":%llu,\"status\":%llu,\"timeout\":%llu},"
           "\"latency_us\":{\"mean\":%.1f,\"p50\":%u,\"p90\":%u,\"p99\":%u,\"max\":%u}}\n",
           (unsigned long long)nlat, (unsigned long long)(elapsed / 1000), (unsigned long long)bytes_read,
           (unsigned long long)err_connect, (unsigned long long)err_read, (unsigned long long)err_write,
           (unsigned long long)err_status, (unsigned long long)err_timeout,
           nlat ? sum / (double)nlat : 0.0, percentile(50), percentile(90), percentile(99),
           nlat ? lat[nlat - 1] : 0);
    for (int i = 0; i < conns; i++) close(cs[i].fd);
    free(cs);
    free(events);
    free(lat);
    free(request);
    return 0;
}
