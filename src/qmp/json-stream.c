/*
 * Streaming JSON splitter (see json-stream.h).
 *
 * State while inside a value: `depth` counts open brackets, `quote` is the
 * quote character of the string we are in (0 outside strings) and `escape`
 * says the previous byte was a backslash inside a string.  A bare top-level
 * token (number, keyword, garbage) has depth 0 and `scalar` set; it ends at
 * whitespace or a structural character, which is then processed again.
 *
 * The buffer holds the value as JSON, already converted: a single-quoted
 * string is re-quoted with '"' (escaping '"' inside it), and "\'" becomes a
 * plain "'", which jansson would otherwise refuse.
 */
#include "qmp/json-stream.h"
#include "util/alloc.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct JsonStream {
    JsonStreamEmitFn *emit;
    void *opaque;
    size_t max_size;
    int max_depth;

    char *buf;
    size_t len, cap;
    bool active;      /* inside a value */
    bool scalar;      /* the value is a bare top-level token */
    bool discarding;  /* over a limit: skip to the value's end, no buffer */
    bool recovering;  /* after a lexical error: skip to a resumption point */
    int depth;
    char quote;       /* '"' or '\'' inside a string, else 0 */
    bool escape;
};

JsonStream *json_stream_new(JsonStreamEmitFn *emit, void *opaque)
{
    JsonStream *js = bj_calloc(1, sizeof(*js));
    js->emit = emit;
    js->opaque = opaque;
    js->max_size = JSON_STREAM_MAX_SIZE;
    js->max_depth = JSON_STREAM_MAX_DEPTH;
    return js;
}

void json_stream_set_limits(JsonStream *js, size_t max_size, int max_depth)
{
    js->max_size = max_size;
    js->max_depth = max_depth;
}

size_t json_stream_pending(const JsonStream *js)
{
    return js->len;
}

static void reset(JsonStream *js)
{
    js->len = 0;
    js->active = js->scalar = js->discarding = js->escape = false;
    js->recovering = false;
    js->depth = 0;
    js->quote = 0;
    /* Give back a big buffer once the big value is gone. */
    if (js->cap > 65536) {
        free(js->buf);
        js->buf = NULL;
        js->cap = 0;
    }
}

void json_stream_free(JsonStream *js)
{
    if (js) {
        free(js->buf);
        free(js);
    }
}

static void emit_error(JsonStream *js, const char *fmt, const char *arg)
{
    Error *err = NULL;
    error_setg(&err, fmt, arg);
    js->emit(js->opaque, NULL, err);
}

/*
 * A byte no JSON text may contain there (0xFF, a raw control character):
 * drop the value in progress, report it, and skip input up to the next
 * structural character or control character, where QEMU's lexer resumes
 * too.  A client forces a clean state this way (QMP spec 2.6).
 */
static void lexical_error(JsonStream *js, unsigned char c)
{
    reset(js);
    js->recovering = true;
    char what[4] = { (char)c, 0 };
    if (c == 0xFF) {
        strcpy(what, "\xef\xbf\xbd");   /* U+FFFD, as QEMU shows it */
    }
    emit_error(js, "JSON parse error, stray '%s'", what);
}

/* Starts skipping the rest of the current value after a limit error. */
static void overflow(JsonStream *js, const char *msg)
{
    emit_error(js, "%s", msg);
    js->discarding = true;
    js->len = 0;
    free(js->buf);
    js->buf = NULL;
    js->cap = 0;
}

static void put(JsonStream *js, char c)
{
    if (js->discarding) {
        return;
    }
    if (js->len + 1 > js->max_size) {
        overflow(js, "JSON token size limit exceeded");
        return;
    }
    if (js->len == js->cap) {
        size_t ncap = js->cap ? js->cap * 2 : 256;
        /* Sized by the client, up to max_size: a refusal, not an abort. */
        char *nbuf = bj_try_reallocarray(js->buf, ncap, 1);
        if (!nbuf) {
            overflow(js, "JSON token does not fit in memory");
            return;
        }
        js->buf = nbuf;
        js->cap = ncap;
    }
    js->buf[js->len++] = c;
}

static void finish(JsonStream *js)
{
    if (!js->discarding) {
        Error *err = NULL;
        json_t *v = json_parse_qmp(js->buf, js->len, &err);
        reset(js);
        js->emit(js->opaque, v, err);
    } else {
        reset(js);
    }
}

static bool is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool ends_scalar(unsigned char c)
{
    return is_space(c) || c == '{' || c == '}' || c == '[' || c == ']' ||
           c == '"' || c == '\'';
}

/* One byte inside a string. */
static void string_byte(JsonStream *js, unsigned char c)
{
    if (js->escape) {
        js->escape = false;
        if (c == '\'') {
            put(js, '\'');        /* "\'" -> "'" (jansson has no \') */
        } else {
            put(js, '\\');
            put(js, (char)c);
        }
        return;
    }
    if (c == '\\') {
        js->escape = true;
        return;
    }
    if (c == (unsigned char)js->quote) {
        js->quote = 0;
        put(js, '"');
        if (js->depth == 0) {
            finish(js);           /* a top-level string is a whole value */
        }
        return;
    }
    if (c == '"') {               /* inside 'single quotes' */
        put(js, '\\');
    }
    put(js, (char)c);
}

static void feed_byte(JsonStream *js, unsigned char c)
{
    /* 0xFF never occurs in UTF-8: it is QMP's "reset the parser".  The
     * error reply tells the client where the reset happened, as QEMU's
     * does.  Raw control characters are lexical errors as well, inside
     * strings too, which is what lets a runaway string end at a newline. */
    if (c == 0xFF) {
        lexical_error(js, c);
        return;
    }
    if (js->recovering) {
        if (c < 0x20) {
            js->recovering = false;   /* a line end is a fresh start */
            return;
        }
        if (c != '{' && c != '}' && c != '[' && c != ']' && c != ':' &&
            c != ',') {
            return;
        }
        js->recovering = false;
    }
    if (c < 0x20 && (js->quote || (c != '\t' && c != '\n' && c != '\r'))) {
        lexical_error(js, c);
        return;
    }
    if (js->quote) {
        string_byte(js, c);
        return;
    }
    if (js->scalar) {
        if (!ends_scalar(c)) {
            put(js, (char)c);
            return;
        }
        finish(js);
        /* fall through: c starts the next thing */
    }
    if (!js->active) {
        if (is_space(c)) {
            return;
        }
        if (c == '}' || c == ']') {
            emit_error(js, "JSON parse error, %s", "expecting value");
            return;
        }
        js->active = true;
        if (c != '{' && c != '[' && c != '"' && c != '\'') {
            js->scalar = true;
            put(js, (char)c);
            return;
        }
    }
    switch (c) {
    case '"':
    case '\'':
        js->quote = (char)c;
        put(js, '"');
        return;
    case '{':
    case '[':
        if (++js->depth > js->max_depth && !js->discarding) {
            overflow(js, "JSON nesting depth limit exceeded");
        }
        put(js, (char)c);
        return;
    case '}':
    case ']':
        put(js, (char)c);
        if (--js->depth == 0) {
            finish(js);
        }
        return;
    default:
        put(js, (char)c);
        return;
    }
}

void json_stream_feed(JsonStream *js, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    for (size_t i = 0; i < len; i++) {
        feed_byte(js, p[i]);
    }
}

/* jansson's message -> the words QEMU's parser uses for the same fault. */
static char *qemu_wording(const char *text)
{
    static const struct {
        const char *prefix;
        const char *qemu;
    } map[] = {
        { "string or '}' expected near '}'", "expecting value" },
        { "string or '}' expected", "key is not a string in object" },
        { "unexpected token", "expecting value" },
        { "':' expected", "missing : in object pair" },
        { "'}' expected", "expected separator in dict" },
        { "']' expected", "expected separator in list" },
        { "invalid escape", "invalid escape sequence in string" },
        { "unable to decode byte", "invalid UTF-8 sequence in string" },
        { "premature end of input", "premature EOI" },
        { "duplicate object key", "duplicate key" },
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        if (!strncmp(text, map[i].prefix, strlen(map[i].prefix))) {
            return bj_strdup(map[i].qemu);
        }
    }
    const char *near = strstr(text, " near '");
    if (!strncmp(text, "invalid token", 13) && near) {
        const char *tok = near + 7;
        size_t n = strlen(tok);
        if (n && tok[n - 1] == '\'') {
            n--;
        }
        bool word = (*tok >= 'a' && *tok <= 'z') || (*tok >= 'A' &&
                                                     *tok <= 'Z');
        return bj_asprintf("%s '%.*s'", word ? "invalid keyword" : "stray",
                           (int)n, tok);
    }
    return bj_strdup(text);
}

/*
 * QEMU reads an integer beyond int64 as a floating-point number; jansson
 * refuses it.  Rewrites such tokens (outside strings) with a ".0" suffix so
 * that jansson reads them as reals too.  Only used after a failed parse.
 */
static char *widen_big_integers(const char *buf, size_t len, size_t *out_len)
{
    char *out = bj_try_malloc(len * 2 + 1);
    if (!out) {
        return NULL;
    }
    size_t o = 0;
    bool in_str = false, esc = false;
    for (size_t i = 0; i < len;) {
        char c = buf[i];
        if (in_str) {
            out[o++] = c;
            i++;
            if (esc) {
                esc = false;
            } else if (c == '\\') {
                esc = true;
            } else if (c == '"') {
                in_str = false;
            }
            continue;
        }
        if (c == '"') {
            in_str = true;
            out[o++] = c;
            i++;
            continue;
        }
        if (c == '-' || (c >= '0' && c <= '9')) {
            size_t j = i;
            bool integral = true;
            while (j < len && strchr("0123456789+-.eE", buf[j])) {
                if (buf[j] == '.' || buf[j] == 'e' || buf[j] == 'E') {
                    integral = false;
                }
                j++;
            }
            memcpy(out + o, buf + i, j - i);
            o += j - i;
            size_t digits = j - i - (c == '-');
            if (integral && digits >= 19) {
                char tmp[32];
                bool big = digits > 20;
                if (!big) {
                    memcpy(tmp, buf + i, j - i);
                    tmp[j - i] = '\0';
                    errno = 0;
                    (void)strtoll(tmp, NULL, 10);
                    big = errno == ERANGE;
                }
                if (big) {
                    out[o++] = '.';
                    out[o++] = '0';
                }
            }
            i = j;
            continue;
        }
        out[o++] = c;
        i++;
    }
    *out_len = o;
    return out;
}

json_t *json_parse_qmp(const char *buf, size_t len, Error **errp)
{
    json_error_t jerr;
    /* NUL inside strings is let through so that the monitor can refuse it
     * with the member's name (qmp_check_no_nul); a repeated key is refused
     * here, as QEMU's parser does ("last one wins" would let a request say
     * two things at once). */
    const size_t flags = JSON_DECODE_ANY | JSON_ALLOW_NUL |
                         JSON_REJECT_DUPLICATES;
    json_t *v = json_loadb(buf, len, flags, &jerr);
    if (!v && !strncmp(jerr.text, "too big ", 8)) {
        size_t wlen;
        char *wide = widen_big_integers(buf, len, &wlen);
        if (wide) {      /* else the first parse's error stands */
            v = json_loadb(wide, wlen, flags, &jerr);
            free(wide);
        }
    }
    if (!v) {
        char *w = qemu_wording(jerr.text);
        error_setg(errp, "JSON parse error, %s", w);
        free(w);
    }
    return v;
}
