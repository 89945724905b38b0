/*
 * Strict JSON parsing in C: one pass over the body that builds the document.
 * `check`, further below, makes the same pass against a JSON Schema without
 * building the document.
 *
 * `parse_strict_json` in json_body.py is the reference. `parse` accepts
 * exactly the bodies that the reference accepts and returns an equal
 * document, with the same types: int for a literal without fraction or
 * exponent, float otherwise, converted by PyOS_string_to_double as
 * Python's float() converts the literal. It returns REJECTED for any other
 * body, and the caller then runs the Python parser, which names the first
 * problem. So this module never explains a rejection, and a case it is not
 * sure about may always be rejected.
 *
 * The rules, whose reasons json_body.py gives:
 * - the RFC 8259 grammar, with any top-level value and without NaN or Infinity,
 * - strict UTF-8, as Python's decoder reads it, without a byte order mark,
 * - no escape that leaves a lone surrogate,
 * - no duplicate key, compared after decoding,
 * - integers in the signed 64-bit range, and floats that do not overflow,
 * - at most max_depth nested containers and max_members entries in each,
 * - nothing but JSON whitespace after the value.
 *
 * Each nesting level goes through Py_EnterRecursiveCall, like json's C
 * scanner that the reference uses, so a caller near the recursion limit
 * gets REJECTED here where the reference raises its nesting error.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Equal to json_body.MAX_DEPTH_LIMIT. */
#define MAX_DEPTH_LIMIT 500
/* Float literals up to this length are converted from a buffer on the stack. */
#define FLOAT_BUFFER 64
/* Escaped strings up to this many bytes are decoded into a buffer on the stack. */
#define STRING_BUFFER 256

/*
 * Object keys repeat across the objects of a body and across requests, so
 * ASCII keys without escapes of up to KEY_CACHE_MAX_LENGTH bytes are kept
 * in a direct-mapped cache. A hit returns the same str, whose hash str
 * objects cache, so it costs neither an allocation nor a hash. A miss
 * replaces the slot's key. The keys come from clients, so the cache keeps
 * at most KEY_CACHE_SLOTS short strings.
 */
#define KEY_CACHE_SLOTS 512
#define KEY_CACHE_MAX_LENGTH 32

/* A cached key with its first and last eight bytes, which decide equality
 * for keys of up to 16 bytes without reading the str. */
typedef struct {
    PyObject *key;
    uint64_t head;
    uint64_t tail;
} CachedKey;

static CachedKey key_cache[KEY_CACHE_SLOTS];

/* The object that `parse` returns for a body it does not accept. */
static PyObject *rejected;

/* 1 for the bytes that end a run of plain string contents: the quote, the
 * backslash, control characters and bytes of non-ASCII characters. */
static unsigned char string_stops[256];

typedef struct {
    const unsigned char *end;
    int depth;
    int max_depth;
    Py_ssize_t max_members;
} Parser;

/*
 * The parse functions take the position of a value's first byte, move it
 * past the value and return a new reference. NULL with no exception set
 * means the body is rejected. NULL with an exception set is an error of
 * the interpreter, such as MemoryError, which the caller raises.
 */
static PyObject *parse_value(Parser *parser, const unsigned char **position);

static inline const unsigned char *
skip_whitespace(const unsigned char *p, const unsigned char *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) {
        p++;
    }
    return p;
}

/* Return the first byte from `p` that is in string_stops, or `end`. */
static inline const unsigned char *
skip_plain_bytes(const unsigned char *p, const unsigned char *end)
{
    const uint64_t ones = 0x0101010101010101u, high_bits = 0x8080808080808080u;

    /* Eight bytes at a time. A byte equal to c makes (w ^ c) - 1 borrow
     * into its high bit, and so does a byte below 0x20 in w - 0x20. A
     * borrow can also set the high bit of a later byte, but only after a
     * byte that is a stop itself, so a word is skipped only without any
     * stop in it. */
    while (end - p >= 8) {
        uint64_t word, quotes, backslashes, stops;
        memcpy(&word, p, 8);
        quotes = word ^ (ones * '"');
        backslashes = word ^ (ones * '\\');
        stops = ((quotes - ones) & ~quotes) | ((backslashes - ones) & ~backslashes) |
                (word - ones * 0x20) | word;
        if (stops & high_bits) {
            break;
        }
        p += 8;
    }
    while (p < end && !string_stops[*p]) {
        p++;
    }
    return p;
}

static inline int
is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/*
 * Decode the UTF-8 sequence at `p`, whose lead byte is 0x80 or above, into
 * `code_point`. Returns its length, or 0 when Python's strict UTF-8 decoder
 * would reject it: a stray continuation byte, an overlong form, an encoded
 * surrogate, a value above U+10FFFF or a sequence cut off by `end`.
 */
static inline int
decode_utf8(const unsigned char *p, const unsigned char *end, Py_UCS4 *code_point)
{
    unsigned char lead = p[0];
    Py_ssize_t available = end - p;
    unsigned char low = 0x80, high = 0xBF;

    if (lead >= 0xC2 && lead <= 0xDF) {
        if (available < 2 || (p[1] & 0xC0) != 0x80) {
            return 0;
        }
        *code_point = ((Py_UCS4)(lead & 0x1F) << 6) | (p[1] & 0x3F);
        return 2;
    }
    if (lead >= 0xE0 && lead <= 0xEF) {
        if (lead == 0xE0) {
            low = 0xA0; /* below is overlong */
        }
        else if (lead == 0xED) {
            high = 0x9F; /* above are the surrogates U+D800 to U+DFFF */
        }
        if (available < 3 || p[1] < low || p[1] > high || (p[2] & 0xC0) != 0x80) {
            return 0;
        }
        *code_point = ((Py_UCS4)(lead & 0x0F) << 12) | ((Py_UCS4)(p[1] & 0x3F) << 6) |
                      (p[2] & 0x3F);
        return 3;
    }
    if (lead >= 0xF0 && lead <= 0xF4) {
        if (lead == 0xF0) {
            low = 0x90; /* below is overlong */
        }
        else if (lead == 0xF4) {
            high = 0x8F; /* above is beyond U+10FFFF */
        }
        if (available < 4 || p[1] < low || p[1] > high || (p[2] & 0xC0) != 0x80 ||
            (p[3] & 0xC0) != 0x80) {
            return 0;
        }
        *code_point = ((Py_UCS4)(lead & 0x07) << 18) | ((Py_UCS4)(p[1] & 0x3F) << 12) |
                      ((Py_UCS4)(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
        return 4;
    }
    return 0;
}

/* Return the value of the four hex digits (either case) at `p`, or -1 if one is not a hex digit. */
static inline long
read_hex4(const unsigned char *p)
{
    long value = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        value <<= 4;
        if (c >= '0' && c <= '9') {
            value |= c - '0';
        }
        else if (c >= 'a' && c <= 'f') {
            value |= c - 'a' + 10;
        }
        else if (c >= 'A' && c <= 'F') {
            value |= c - 'A' + 10;
        }
        else {
            return -1;
        }
    }
    return value;
}

/*
 * Decode the contents of a string with escapes, from `p` to `closing`, the
 * closing quote, into `units`, which has room for one code point per byte.
 * Returns the number of code points, or -1 to reject the string.
 */
static Py_ssize_t
decode_escaped(const unsigned char *p, const unsigned char *closing, Py_UCS4 *units)
{
    Py_ssize_t count = 0;

    while (p < closing) {
        unsigned char c = *p;
        Py_UCS4 code_point;

        if (c == '\\') {
            /* The closing quote was found by skipping the byte after each
             * backslash, so that byte is before `closing`. */
            unsigned char escape = p[1];
            p += 2;
            switch (escape) {
            case '"':
            case '\\':
            case '/':
                code_point = escape;
                break;
            case 'b':
                code_point = '\b';
                break;
            case 'f':
                code_point = '\f';
                break;
            case 'n':
                code_point = '\n';
                break;
            case 'r':
                code_point = '\r';
                break;
            case 't':
                code_point = '\t';
                break;
            case 'u': {
                long unit;
                if (closing - p < 4 || (unit = read_hex4(p)) < 0) {
                    return -1;
                }
                p += 4;
                if (unit >= 0xDC00 && unit <= 0xDFFF) {
                    return -1; /* a low surrogate without a high one */
                }
                if (unit >= 0xD800 && unit <= 0xDBFF) {
                    /* json joins a high surrogate with a directly following
                     * escaped low one. Anything else leaves it alone. */
                    long low_unit;
                    if (closing - p < 6 || p[0] != '\\' || p[1] != 'u' ||
                        (low_unit = read_hex4(p + 2)) < 0xDC00 || low_unit > 0xDFFF) {
                        return -1;
                    }
                    p += 6;
                    unit = 0x10000 + ((unit - 0xD800) << 10) + (low_unit - 0xDC00);
                }
                code_point = (Py_UCS4)unit;
                break;
            }
            default:
                return -1;
            }
        }
        else if (c < 0x20) {
            return -1; /* a control character, which json's strict mode rejects */
        }
        else if (c < 0x80) {
            code_point = c;
            p++;
        }
        else {
            /* A sequence that runs into `closing` is invalid anyway: a quote
             * is not a continuation byte. */
            int length = decode_utf8(p, closing, &code_point);
            if (length == 0) {
                return -1;
            }
            p += length;
        }
        units[count++] = code_point;
    }
    return count;
}

/* Parse a string with escapes, whose contents start at `start`. */
static PyObject *
parse_escaped_string(Parser *parser, const unsigned char *start, const unsigned char **position)
{
    const unsigned char *p = start, *end = parser->end;
    Py_UCS4 stack_units[STRING_BUFFER];
    Py_UCS4 *units = stack_units;
    PyObject *result = NULL;
    Py_ssize_t count;

    /* 1. Find the closing quote: the first quote not escaped. */
    while (p < end && *p != '"') {
        if (*p == '\\') {
            if (end - p < 2) {
                return NULL;
            }
            p += 2;
        }
        else {
            p++;
        }
    }
    if (p >= end) {
        return NULL; /* unterminated */
    }

    /* 2. Decode the contents, which have at most one code point per byte. */
    if (p - start > STRING_BUFFER) {
        units = PyMem_New(Py_UCS4, p - start);
        if (units == NULL) {
            return PyErr_NoMemory();
        }
    }
    count = decode_escaped(start, p, units);
    if (count >= 0) {
        result = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, units, count);
        *position = p + 1;
    }
    if (units != stack_units) {
        PyMem_Free(units);
    }
    return result;
}

/* Return the str of an ASCII key of `length` bytes, from the cache when it is there. */
static PyObject *
cached_key(const unsigned char *start, Py_ssize_t length)
{
    /* The slot comes from the length and the first and last eight bytes,
     * mixed by multiplying with odd constants. Below eight bytes, the tail
     * stays 0. */
    uint64_t head = 0, tail = 0, mixed;
    CachedKey *slot;
    PyObject *key;

    if (length >= 8) {
        memcpy(&head, start, 8);
        memcpy(&tail, start + length - 8, 8);
    }
    else {
        for (Py_ssize_t i = 0; i < length; i++) {
            head |= (uint64_t)start[i] << (8 * i);
        }
    }
    mixed = head * 0x9E3779B97F4A7C15u ^ (tail + (uint64_t)length) * 0xC2B2AE3D27D4EB4Fu;
    slot = &key_cache[(mixed >> 32) & (KEY_CACHE_SLOTS - 1)];
    key = slot->key;
    if (key != NULL && slot->head == head && slot->tail == tail &&
        PyUnicode_GET_LENGTH(key) == length &&
        (length <= 16 ||
         memcmp(PyUnicode_1BYTE_DATA(key) + 8, start + 8, (size_t)(length - 16)) == 0)) {
        return Py_NewRef(key);
    }
    key = PyUnicode_New(length, 127);
    if (key == NULL) {
        return NULL;
    }
    memcpy(PyUnicode_1BYTE_DATA(key), start, (size_t)length);
    /* Store the hash in the str now, so that every hit finds it there. */
    if (PyObject_Hash(key) == -1) {
        Py_DECREF(key);
        return NULL;
    }
    Py_XSETREF(slot->key, Py_NewRef(key));
    slot->head = head;
    slot->tail = tail;
    return key;
}

/* Parse a string. With `is_key` set, an object key may come from the key cache. */
static PyObject *
parse_string(Parser *parser, const unsigned char **position, int is_key)
{
    const unsigned char *start = *position + 1; /* after the opening quote */
    const unsigned char *p = start, *end = parser->end;
    int ascii = 1;
    Py_ssize_t length;
    PyObject *result;

    for (;;) {
        unsigned char c;
        p = skip_plain_bytes(p, end);
        if (p >= end) {
            return NULL; /* unterminated */
        }
        c = *p;
        if (c == '"') {
            break;
        }
        if (c == '\\') {
            return parse_escaped_string(parser, start, position);
        }
        if (c < 0x20) {
            return NULL;
        }
        /* The only other stops are the bytes of non-ASCII characters. */
        {
            Py_UCS4 code_point;
            int sequence = decode_utf8(p, end, &code_point);
            if (sequence == 0) {
                return NULL;
            }
            ascii = 0;
            p += sequence;
        }
    }

    length = p - start;
    *position = p + 1;
    if (!ascii) {
        /* The loop above checked the UTF-8, so only a MemoryError can fail this. */
        return PyUnicode_DecodeUTF8((const char *)start, length, "strict");
    }
    if (is_key && length <= KEY_CACHE_MAX_LENGTH) {
        return cached_key(start, length);
    }
    result = PyUnicode_New(length, 127);
    if (result != NULL) {
        memcpy(PyUnicode_1BYTE_DATA(result), start, (size_t)length);
    }
    return result;
}

/* The powers of ten that a double represents exactly. */
static const double exact_powers_of_ten[] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

/*
 * Convert a float literal of at most 15 significant digits and a small
 * exponent without strtod, and return 1, or return 0 to leave it to
 * convert_float. The digits form an integer below 2^53 and the power of ten
 * is exact, so one multiplication or division rounds once, to the double
 * that a correctly rounded strtod such as Python's returns (Clinger's fast
 * path). It needs double arithmetic without extra precision.
 */
static int
convert_short_float(const unsigned char *digits, const unsigned char *digits_end,
                    const unsigned char *fraction, const unsigned char *fraction_end,
                    const unsigned char *exponent, const unsigned char *exponent_end,
                    int exponent_negative, int negative, double *value)
{
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
    uint64_t mantissa = 0;
    long power;

    if ((digits_end - digits) + (fraction_end - fraction) > 15 || exponent_end - exponent > 3) {
        return 0;
    }
    for (const unsigned char *digit = digits; digit < digits_end; digit++) {
        mantissa = mantissa * 10 + (uint64_t)(*digit - '0');
    }
    for (const unsigned char *digit = fraction; digit < fraction_end; digit++) {
        mantissa = mantissa * 10 + (uint64_t)(*digit - '0');
    }
    power = 0;
    for (const unsigned char *digit = exponent; digit < exponent_end; digit++) {
        power = power * 10 + (*digit - '0');
    }
    if (exponent_negative) {
        power = -power;
    }
    power -= (long)(fraction_end - fraction);
    if (power < -22 || power > 22) {
        return 0;
    }
    *value = power >= 0 ? (double)mantissa * exact_powers_of_ten[power]
                        : (double)mantissa / exact_powers_of_ten[-power];
    if (negative) {
        *value = -*value;
    }
    return 1;
#else
    return 0;
#endif
}

/*
 * Convert a float literal as Python's float() does into `value`. Returns 1,
 * 0 to reject a literal that overflows, or -1 with an exception set.
 */
static int
convert_float(const unsigned char *start, Py_ssize_t length, double *value)
{
    char stack_buffer[FLOAT_BUFFER];
    char *buffer = stack_buffer;
    char *stop;

    if (length >= FLOAT_BUFFER) {
        buffer = PyMem_Malloc((size_t)length + 1);
        if (buffer == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    memcpy(buffer, start, (size_t)length);
    buffer[length] = '\0';
    /* With no overflow exception, an overflow returns an infinity. */
    *value = PyOS_string_to_double(buffer, &stop, NULL);
    if (buffer != stack_buffer) {
        PyMem_Free(buffer);
    }
    if (*value == -1.0 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError)) {
            return -1;
        }
        /* A literal that float() cannot read: the Python parser decides. */
        PyErr_Clear();
        return 0;
    }
    return isfinite(*value) ? 1 : 0;
}

/* A number literal: an int64 for one without fraction or exponent, else a double. */
typedef struct {
    int is_integer;
    int64_t integer;
    double real;
} Number;

/*
 * Read the number literal at the position into `number` and move the
 * position past it. Returns 1, 0 to reject the body, or -1 with an
 * exception set.
 */
static int
read_number(const unsigned char **position, const unsigned char *end, Number *number)
{
    const unsigned char *start = *position, *p = start;
    const unsigned char *digits, *digits_end;
    const unsigned char *fraction = NULL, *fraction_end = NULL;
    const unsigned char *exponent = NULL, *exponent_end = NULL;
    int negative = 0, is_float = 0, exponent_negative = 0;
    uint64_t magnitude = 0;

    /* 1. The grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)? */
    if (*p == '-') {
        negative = 1;
        p++;
    }
    digits = p;
    if (p < end && *p == '0') {
        p++;
    }
    else if (p < end && *p >= '1' && *p <= '9') {
        while (p < end && is_digit(*p)) {
            p++;
        }
    }
    else {
        return 0;
    }
    digits_end = p;
    if (p < end && *p == '.') {
        p++;
        if (p >= end || !is_digit(*p)) {
            return 0;
        }
        fraction = p;
        while (p < end && is_digit(*p)) {
            p++;
        }
        fraction_end = p;
        is_float = 1;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) {
            exponent_negative = *p == '-';
            p++;
        }
        if (p >= end || !is_digit(*p)) {
            return 0;
        }
        exponent = p;
        while (p < end && is_digit(*p)) {
            p++;
        }
        exponent_end = p;
        is_float = 1;
    }
    *position = p;
    if (is_float) {
        number->is_integer = 0;
        if (convert_short_float(digits, digits_end, fraction, fraction_end, exponent,
                                exponent_end, exponent_negative, negative, &number->real)) {
            return 1;
        }
        return convert_float(start, p - start, &number->real);
    }

    /* 2. An integer in the signed 64-bit range. 19 digits cannot overflow
     * uint64_t, and without leading zeros more digits are out of range. */
    if (digits_end - digits > 19) {
        return 0;
    }
    for (const unsigned char *digit = digits; digit < digits_end; digit++) {
        magnitude = magnitude * 10 + (uint64_t)(*digit - '0');
    }
    if (negative) {
        if (magnitude > (uint64_t)INT64_MAX + 1) {
            return 0;
        }
        number->integer =
            magnitude == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)magnitude;
    }
    else {
        if (magnitude > (uint64_t)INT64_MAX) {
            return 0;
        }
        number->integer = (int64_t)magnitude;
    }
    number->is_integer = 1;
    return 1;
}

static PyObject *
parse_number(Parser *parser, const unsigned char **position)
{
    Number number;

    if (read_number(position, parser->end, &number) != 1) {
        return NULL;
    }
    if (number.is_integer) {
        return PyLong_FromLongLong(number.integer);
    }
    return PyFloat_FromDouble(number.real);
}

/*
 * Move `*p`, just past a member of an array or object, over the comma that
 * follows it and return 1, or over the `closing` bracket and return 0.
 * Anything else returns -1 and leaves `*p` alone.
 */
static inline int
next_member(const unsigned char **p, const unsigned char *end, unsigned char closing)
{
    const unsigned char *q = skip_whitespace(*p, end);

    if (q < end && *q == ',') {
        *p = skip_whitespace(q + 1, end);
        return 1;
    }
    if (q < end && *q == closing) {
        *p = q + 1;
        return 0;
    }
    return -1;
}

/* Enter one more nesting level. Returns 0 to reject the body. */
static int
enter_container(Parser *parser)
{
    if (parser->depth >= parser->max_depth) {
        return 0;
    }
    if (Py_EnterRecursiveCall(" while parsing JSON")) {
        /* The reference raises its nesting error here, so the Python parser decides. */
        if (PyErr_ExceptionMatches(PyExc_RecursionError)) {
            PyErr_Clear();
        }
        return 0;
    }
    parser->depth++;
    return 1;
}

static void
leave_container(Parser *parser)
{
    parser->depth--;
    Py_LeaveRecursiveCall();
}

static PyObject *
parse_array(Parser *parser, const unsigned char **position)
{
    const unsigned char *end = parser->end;
    const unsigned char *p;
    PyObject *list;

    if (!enter_container(parser)) {
        return NULL;
    }
    list = PyList_New(0);
    if (list == NULL) {
        goto fail;
    }
    p = skip_whitespace(*position + 1, end);
    if (p < end && *p == ']') {
        *position = p + 1;
        leave_container(parser);
        return list;
    }
    for (;;) {
        PyObject *item;
        int failed, more;

        if (p >= end) {
            goto fail;
        }
        *position = p;
        item = parse_value(parser, position);
        if (item == NULL) {
            goto fail;
        }
        failed = PyList_Append(list, item);
        Py_DECREF(item);
        if (failed || PyList_GET_SIZE(list) > parser->max_members) {
            goto fail;
        }
        p = *position;
        more = next_member(&p, end, ']');
        if (more < 0) {
            goto fail;
        }
        if (more == 0) {
            *position = p;
            break;
        }
    }
    leave_container(parser);
    return list;

fail:
    Py_XDECREF(list);
    leave_container(parser);
    return NULL;
}

static PyObject *
parse_object(Parser *parser, const unsigned char **position)
{
    const unsigned char *end = parser->end;
    const unsigned char *p;
    PyObject *dict;

    if (!enter_container(parser)) {
        return NULL;
    }
    dict = PyDict_New();
    if (dict == NULL) {
        goto fail;
    }
    p = skip_whitespace(*position + 1, end);
    if (p < end && *p == '}') {
        *position = p + 1;
        leave_container(parser);
        return dict;
    }
    for (;;) {
        PyObject *key, *value;
        Py_ssize_t members;
        int failed, more;

        if (p >= end || *p != '"') {
            goto fail;
        }
        *position = p;
        key = parse_string(parser, position, 1);
        if (key == NULL) {
            goto fail;
        }
        p = skip_whitespace(*position, end);
        if (p >= end || *p != ':') {
            Py_DECREF(key);
            goto fail;
        }
        p = skip_whitespace(p + 1, end);
        if (p >= end) {
            Py_DECREF(key);
            goto fail;
        }
        *position = p;
        value = parse_value(parser, position);
        if (value == NULL) {
            Py_DECREF(key);
            goto fail;
        }
        members = PyDict_GET_SIZE(dict);
        failed = PyDict_SetItem(dict, key, value);
        Py_DECREF(key);
        Py_DECREF(value);
        /* A dict that did not grow already had the key: a duplicate. */
        if (failed || PyDict_GET_SIZE(dict) == members ||
            PyDict_GET_SIZE(dict) > parser->max_members) {
            goto fail;
        }
        p = *position;
        more = next_member(&p, end, '}');
        if (more < 0) {
            goto fail;
        }
        if (more == 0) {
            *position = p;
            break;
        }
    }
    leave_container(parser);
    return dict;

fail:
    Py_XDECREF(dict);
    leave_container(parser);
    return NULL;
}

/* Match the literal `word` of `length` bytes at the position and return `value`. */
static PyObject *
parse_literal(Parser *parser, const unsigned char **position, const char *word,
              Py_ssize_t length, PyObject *value)
{
    const unsigned char *p = *position;
    if (parser->end - p < length || memcmp(p, word, (size_t)length) != 0) {
        return NULL;
    }
    *position = p + length;
    return Py_NewRef(value);
}

static PyObject *
parse_value(Parser *parser, const unsigned char **position)
{
    switch (**position) {
    case '{':
        return parse_object(parser, position);
    case '[':
        return parse_array(parser, position);
    case '"':
        return parse_string(parser, position, 0);
    case 't':
        return parse_literal(parser, position, "true", 4, Py_True);
    case 'f':
        return parse_literal(parser, position, "false", 5, Py_False);
    case 'n':
        return parse_literal(parser, position, "null", 4, Py_None);
    case '-':
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9':
        return parse_number(parser, position);
    default:
        return NULL; /* includes NaN, Infinity and a byte order mark */
    }
}

static PyObject *
parse_document(const unsigned char *data, Py_ssize_t size, int max_depth,
               Py_ssize_t max_members)
{
    Parser parser = {data + size, 0, max_depth, max_members};
    const unsigned char *p = skip_whitespace(data, parser.end);
    PyObject *document;

    if (p >= parser.end) {
        return NULL;
    }
    document = parse_value(&parser, &p);
    if (document == NULL) {
        return NULL;
    }
    if (skip_whitespace(p, parser.end) != parser.end) {
        Py_DECREF(document); /* trailing data */
        return NULL;
    }
    return document;
}

/*
 * Checking a body against a schema without building the document.
 *
 * `compile_schema` turns a JSON Schema that uses only the keywords below
 * into a tree of SchemaNode, and `check` walks the body once against it.
 * `check` returns True only when `parse` would accept the body and
 * jsonschema-rs would find the document valid. Anything else, including
 * every case it cannot decide exactly, returns False, and the caller runs
 * the parser and jsonschema-rs, which name the problem. So a False costs
 * time only, but a wrong True would let through a body that the gateway
 * must reject.
 *
 * The rules of `parse` above apply unchanged, with two shortcuts that
 * return False where `parse` might accept: an object key with an escape,
 * and more than UNLISTED_KEYS_MAX keys in one object that its schema does
 * not list in `properties`.
 *
 * `pattern` and `format` are not implemented here. For each one, the
 * schema compiles a jsonschema-rs validator of the one keyword, built by
 * the caller's factory with the options of the full validator, and `check`
 * calls its is_valid with the string. Apart from its result, that str is
 * the only Python object that `check` creates.
 */

/* The properties and required names of one schema each take a bit of a uint64_t. */
#define MAX_PROPERTIES 64
/* Keys of one object outside `properties`, compared pairwise to find duplicates. */
#define UNLISTED_KEYS_MAX 16

/* The JSON types as bits. jsonschema-rs counts 1.0 as an integer, but
 * `check` decides integers on the literal, so a literal with a fraction or
 * exponent only ever satisfies "number". */
enum {
    JSON_NULL = 1 << 0,
    JSON_BOOLEAN = 1 << 1,
    JSON_OBJECT = 1 << 2,
    JSON_ARRAY = 1 << 3,
    JSON_STRING = 1 << 4,
    JSON_INTEGER = 1 << 5,    /* a number literal without fraction or exponent */
    JSON_FRACTIONAL = 1 << 6, /* a number literal with a fraction or an exponent */
    JSON_ANY = (1 << 7) - 1,
};

/* The literals that an enum or const allows. */
enum {
    ALLOWS_NULL = 1 << 0,
    ALLOWS_TRUE = 1 << 1,
    ALLOWS_FALSE = 1 << 2,
};

/*
 * The values of an enum or const. Only strings, integers, booleans and
 * null are compiled. A string is kept as its UTF-8 bytes, owned by a str in
 * CompiledSchema.strings.
 */
typedef struct {
    unsigned literals;
    Py_ssize_t string_count;
    const char **strings;
    Py_ssize_t *string_lengths;
    Py_ssize_t integer_count;
    int64_t *integers;
} AllowedValues;

/*
 * A bound of minimum, maximum, exclusiveMinimum or exclusiveMaximum, in
 * each form that represents it exactly. An integer instance is compared
 * with `integer` and a double with `real`, so that no comparison rounds.
 *
 * jsonschema-rs 0.58.3 (built with arbitrary precision) reads a double
 * bound as its shortest decimal string, so to it the bound 2.0**60 is
 * 1152921504606847000, not 2^60. Nor does it compare a double instance
 * exactly with an integer bound beyond 2^53: it finds the instance 2.0**60
 * above the maximum 2**60. So a double bound beyond 2^53 has no `integer`
 * form, and compare_real decides a double against an integer bound beyond
 * 2^53 only where rounding cannot matter.
 */
typedef struct {
    int present;
    int has_integer;
    int64_t integer;
    int has_real;
    double real;
} Bound;

typedef struct SchemaNode SchemaNode;

typedef struct {
    const char *name; /* UTF-8, owned by a str in CompiledSchema.strings */
    Py_ssize_t length;
    /* NULL for a name that `required` lists and `properties` does not: its
     * value is then checked against additionalProperties. */
    SchemaNode *schema;
} Property;

struct SchemaNode {
    int rejects_all; /* the schema false */
    unsigned types;  /* JSON_* bits */
    AllowedValues *enum_values;
    AllowedValues *const_value;

    Property *properties;
    int property_count;
    uint64_t required; /* bits of the `properties` entries that must be present */
    SchemaNode *additional;
    Py_ssize_t min_properties;
    Py_ssize_t max_properties;

    SchemaNode *items;
    Py_ssize_t min_items;
    Py_ssize_t max_items;

    Py_ssize_t min_length; /* in code points, as jsonschema-rs counts */
    Py_ssize_t max_length;
    PyObject *pattern_is_valid; /* is_valid of the validator of {"pattern": ...}, or NULL */
    PyObject *format_is_valid;

    Bound minimum;
    Bound maximum;
    Bound exclusive_minimum;
    Bound exclusive_maximum;
};

/* The schemas true and false, shared by every compiled schema and never freed. */
static SchemaNode any_schema = {
    .types = JSON_ANY,
    .additional = &any_schema,
    .max_properties = PY_SSIZE_T_MAX,
    .items = &any_schema,
    .max_items = PY_SSIZE_T_MAX,
    .max_length = PY_SSIZE_T_MAX,
};
static SchemaNode false_schema = {.rejects_all = 1};

/* --- checking --------------------------------------------------------------- */

/*
 * Find the closing quote of the string whose contents start at `p`, and
 * check the contents as `parse` does. Returns the position of the closing
 * quote, or NULL to reject the string. Sets `escaped` when the string has a
 * backslash escape, and `code_points` to the length of the decoded string.
 */
static const unsigned char *
scan_string(const unsigned char *p, const unsigned char *end, int *escaped,
            Py_ssize_t *code_points)
{
    Py_ssize_t count = 0;

    *escaped = 0;
    for (;;) {
        const unsigned char *run = p;
        unsigned char c;

        p = skip_plain_bytes(p, end);
        count += p - run;
        if (p >= end) {
            return NULL; /* unterminated */
        }
        c = *p;
        if (c == '"') {
            break;
        }
        if (c == '\\') {
            /* The escapes and surrogate rules of decode_escaped. */
            *escaped = 1;
            if (end - p < 2) {
                return NULL;
            }
            switch (p[1]) {
            case '"':
            case '\\':
            case '/':
            case 'b':
            case 'f':
            case 'n':
            case 'r':
            case 't':
                p += 2;
                break;
            case 'u': {
                long unit, low_unit;
                if (end - p < 6 || (unit = read_hex4(p + 2)) < 0) {
                    return NULL;
                }
                p += 6;
                if (unit >= 0xDC00 && unit <= 0xDFFF) {
                    return NULL; /* a low surrogate without a high one */
                }
                if (unit >= 0xD800 && unit <= 0xDBFF) {
                    /* A pair decodes to one code point. */
                    if (end - p < 6 || p[0] != '\\' || p[1] != 'u' ||
                        (low_unit = read_hex4(p + 2)) < 0xDC00 || low_unit > 0xDFFF) {
                        return NULL;
                    }
                    p += 6;
                }
                break;
            }
            default:
                return NULL;
            }
            count++;
            continue;
        }
        if (c < 0x20) {
            return NULL;
        }
        {
            Py_UCS4 code_point;
            int sequence = decode_utf8(p, end, &code_point);
            if (sequence == 0) {
                return NULL;
            }
            p += sequence;
            count++;
        }
    }
    *code_points = count;
    return p;
}

enum { BELOW = -1, EQUAL = 0, ABOVE = 1, UNCOMPARABLE = 2 };

/* Compare an integer instance with `bound`. A double bound with a fraction
 * or beyond 2^53 is UNCOMPARABLE (see Bound). */
static inline int
compare_integer(int64_t value, const Bound *bound)
{
    if (!bound->has_integer) {
        return UNCOMPARABLE;
    }
    return (value > bound->integer) - (value < bound->integer);
}

/* Compare a double instance with `bound`. */
static inline int
compare_real(double value, const Bound *bound)
{
    double nearest;

    if (bound->has_real) {
        return (value > bound->real) - (value < bound->real);
    }
    /* An integer bound beyond 2^53. Rounding to a double never reverses an
     * order, so a value below the double nearest to the bound is below the
     * bound, and so is the value's shortest decimal string. A value equal
     * to that double is UNCOMPARABLE, because jsonschema-rs does not
     * compare it exactly (see Bound). */
    nearest = (double)bound->integer;
    if (value == nearest) {
        return UNCOMPARABLE;
    }
    return value > nearest ? ABOVE : BELOW;
}

/* Return whether `order`, the result of comparing the instance with a bound, satisfies it. */
static inline int
satisfies_bound(int order, int is_lower, int is_exclusive)
{
    if (order == UNCOMPARABLE) {
        return 0;
    }
    if (is_lower) {
        return is_exclusive ? order == ABOVE : order != BELOW;
    }
    return is_exclusive ? order == BELOW : order != ABOVE;
}

static int
integer_within_bounds(const SchemaNode *schema, int64_t value)
{
    return (!schema->minimum.present ||
            satisfies_bound(compare_integer(value, &schema->minimum), 1, 0)) &&
           (!schema->maximum.present ||
            satisfies_bound(compare_integer(value, &schema->maximum), 0, 0)) &&
           (!schema->exclusive_minimum.present ||
            satisfies_bound(compare_integer(value, &schema->exclusive_minimum), 1, 1)) &&
           (!schema->exclusive_maximum.present ||
            satisfies_bound(compare_integer(value, &schema->exclusive_maximum), 0, 1));
}

static int
real_within_bounds(const SchemaNode *schema, double value)
{
    return (!schema->minimum.present ||
            satisfies_bound(compare_real(value, &schema->minimum), 1, 0)) &&
           (!schema->maximum.present ||
            satisfies_bound(compare_real(value, &schema->maximum), 0, 0)) &&
           (!schema->exclusive_minimum.present ||
            satisfies_bound(compare_real(value, &schema->exclusive_minimum), 1, 1)) &&
           (!schema->exclusive_maximum.present ||
            satisfies_bound(compare_real(value, &schema->exclusive_maximum), 0, 1));
}

static int
allows_integer(const AllowedValues *allowed, int64_t value)
{
    for (Py_ssize_t i = 0; i < allowed->integer_count; i++) {
        if (allowed->integers[i] == value) {
            return 1;
        }
    }
    return 0;
}

/* `text` is the UTF-8 of a string without escapes, so equal bytes mean equal strings. */
static int
allows_string(const AllowedValues *allowed, const unsigned char *text, Py_ssize_t length)
{
    for (Py_ssize_t i = 0; i < allowed->string_count; i++) {
        if (allowed->string_lengths[i] == length &&
            memcmp(allowed->strings[i], text, (size_t)length) == 0) {
            return 1;
        }
    }
    return 0;
}

/*
 * The check functions take the position of a value's first byte and move
 * it past the value. They return 1 when the value is valid for sure, 0
 * when the body is rejected or the check is not sure, and -1 with an
 * exception set.
 */
static int check_value(Parser *parser, const SchemaNode *schema, const unsigned char **position);

/* Call `is_valid`, a method of a jsonschema-rs validator, with the string
 * whose opening quote is at `opening`. */
static int
string_is_valid(Parser *parser, PyObject *is_valid, const unsigned char *opening)
{
    PyObject *text, *result;
    int valid;

    text = parse_string(parser, &opening, 0);
    if (text == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    result = PyObject_CallOneArg(is_valid, text);
    Py_DECREF(text);
    if (result == NULL) {
        return -1;
    }
    valid = result == Py_True;
    Py_DECREF(result);
    return valid;
}

static int
check_string(Parser *parser, const SchemaNode *schema, const unsigned char **position)
{
    const unsigned char *opening = *position, *closing;
    int escaped, result;
    Py_ssize_t length;

    if (!(schema->types & JSON_STRING)) {
        return 0;
    }
    closing = scan_string(opening + 1, parser->end, &escaped, &length);
    if (closing == NULL || length < schema->min_length || length > schema->max_length) {
        return 0;
    }
    *position = closing + 1;
    if (schema->enum_values != NULL || schema->const_value != NULL) {
        /* The raw bytes equal the decoded string only without escapes. */
        if (escaped) {
            return 0;
        }
        if (schema->enum_values != NULL &&
            !allows_string(schema->enum_values, opening + 1, closing - opening - 1)) {
            return 0;
        }
        if (schema->const_value != NULL &&
            !allows_string(schema->const_value, opening + 1, closing - opening - 1)) {
            return 0;
        }
    }
    if (schema->pattern_is_valid != NULL) {
        result = string_is_valid(parser, schema->pattern_is_valid, opening);
        if (result != 1) {
            return result;
        }
    }
    if (schema->format_is_valid != NULL) {
        return string_is_valid(parser, schema->format_is_valid, opening);
    }
    return 1;
}

static int
check_number(Parser *parser, const SchemaNode *schema, const unsigned char **position)
{
    Number number;
    int result = read_number(position, parser->end, &number);

    if (result != 1) {
        return result;
    }
    if (number.is_integer) {
        int64_t value = number.integer;
        return (schema->types & JSON_INTEGER) && integer_within_bounds(schema, value) &&
               (schema->enum_values == NULL || allows_integer(schema->enum_values, value)) &&
               (schema->const_value == NULL || allows_integer(schema->const_value, value));
    }
    /* The compiled enum and const values contain no doubles, and jsonschema-rs
     * may count a double such as 1.0 equal to an integer, so neither can decide. */
    return (schema->types & JSON_FRACTIONAL) && schema->enum_values == NULL &&
           schema->const_value == NULL && real_within_bounds(schema, number.real);
}

static int
check_literal(Parser *parser, const SchemaNode *schema, const unsigned char **position,
              const char *word, Py_ssize_t length, unsigned type, unsigned literal)
{
    const unsigned char *p = *position;

    if (parser->end - p < length || memcmp(p, word, (size_t)length) != 0) {
        return 0;
    }
    *position = p + length;
    return (schema->types & type) &&
           (schema->enum_values == NULL || (schema->enum_values->literals & literal)) &&
           (schema->const_value == NULL || (schema->const_value->literals & literal));
}

static int
check_array(Parser *parser, const SchemaNode *schema, const unsigned char **position)
{
    const unsigned char *end = parser->end;
    const unsigned char *p;
    Py_ssize_t count = 0;
    int result = 0, more;

    /* The compiled enum and const values contain no arrays. */
    if (!(schema->types & JSON_ARRAY) || schema->enum_values != NULL ||
        schema->const_value != NULL) {
        return 0;
    }
    if (!enter_container(parser)) {
        return 0;
    }
    p = skip_whitespace(*position + 1, end);
    if (p < end && *p == ']') {
        p++;
    }
    else {
        for (;;) {
            if (p >= end || ++count > parser->max_members) {
                goto done;
            }
            result = check_value(parser, schema->items, &p);
            if (result != 1) {
                goto done;
            }
            result = 0;
            more = next_member(&p, end, ']');
            if (more < 0) {
                goto done;
            }
            if (more == 0) {
                break;
            }
        }
    }
    if (count >= schema->min_items && count <= schema->max_items) {
        *position = p;
        result = 1;
    }

done:
    leave_container(parser);
    return result;
}

/* Return the index of the `properties` entry named `key`, or -1. */
static inline int
find_property(const SchemaNode *schema, const unsigned char *key, Py_ssize_t length)
{
    for (int i = 0; i < schema->property_count; i++) {
        const Property *property = &schema->properties[i];
        /* Comparing the first byte separates most names of equal length without calling memcmp. */
        if (property->length == length &&
            (length == 0 || (unsigned char)property->name[0] == key[0]) &&
            memcmp(property->name, key, (size_t)length) == 0) {
            return i;
        }
    }
    return -1;
}

static int
check_object(Parser *parser, const SchemaNode *schema, const unsigned char **position)
{
    const unsigned char *end = parser->end;
    const unsigned char *p;
    /* Keys that `properties` does not list, to find duplicates among them. */
    const unsigned char *unlisted[UNLISTED_KEYS_MAX];
    Py_ssize_t unlisted_lengths[UNLISTED_KEYS_MAX];
    int unlisted_count = 0;
    uint64_t seen = 0; /* bits of the `properties` entries found */
    Py_ssize_t members = 0;
    int result = 0;

    /* The compiled enum and const values contain no objects. */
    if (!(schema->types & JSON_OBJECT) || schema->enum_values != NULL ||
        schema->const_value != NULL) {
        return 0;
    }
    if (!enter_container(parser)) {
        return 0;
    }
    p = skip_whitespace(*position + 1, end);
    if (p < end && *p == '}') {
        p++;
    }
    else {
        for (;;) {
            const unsigned char *key, *key_end;
            const SchemaNode *member_schema = NULL;
            Py_ssize_t key_length, code_points;
            int escaped, index, more;

            if (p >= end || *p != '"') {
                goto done;
            }
            key = p + 1;
            key_end = scan_string(key, end, &escaped, &code_points);
            /* Without escapes, keys with equal bytes are the equal keys
             * that `parse` rejects as duplicates. */
            if (key_end == NULL || escaped) {
                goto done;
            }
            key_length = key_end - key;
            p = skip_whitespace(key_end + 1, end);
            if (p >= end || *p != ':') {
                goto done;
            }
            p = skip_whitespace(p + 1, end);
            if (p >= end || ++members > parser->max_members) {
                goto done;
            }

            index = find_property(schema, key, key_length);
            if (index >= 0) {
                uint64_t bit = (uint64_t)1 << index;
                if (seen & bit) {
                    goto done; /* a duplicate */
                }
                seen |= bit;
                member_schema = schema->properties[index].schema;
            }
            else {
                for (int i = 0; i < unlisted_count; i++) {
                    if (unlisted_lengths[i] == key_length &&
                        memcmp(unlisted[i], key, (size_t)key_length) == 0) {
                        goto done; /* a duplicate */
                    }
                }
                if (unlisted_count == UNLISTED_KEYS_MAX) {
                    goto done; /* undecided: the parser finds any duplicate */
                }
                unlisted[unlisted_count] = key;
                unlisted_lengths[unlisted_count] = key_length;
                unlisted_count++;
            }
            if (member_schema == NULL) {
                member_schema = schema->additional;
            }

            result = check_value(parser, member_schema, &p);
            if (result != 1) {
                goto done;
            }
            result = 0;
            more = next_member(&p, end, '}');
            if (more < 0) {
                goto done;
            }
            if (more == 0) {
                break;
            }
        }
    }
    if ((seen & schema->required) == schema->required && members >= schema->min_properties &&
        members <= schema->max_properties) {
        *position = p;
        result = 1;
    }

done:
    leave_container(parser);
    return result;
}

static int
check_value(Parser *parser, const SchemaNode *schema, const unsigned char **position)
{
    if (schema->rejects_all) {
        return 0;
    }
    switch (**position) {
    case '{':
        return check_object(parser, schema, position);
    case '[':
        return check_array(parser, schema, position);
    case '"':
        return check_string(parser, schema, position);
    case 't':
        return check_literal(parser, schema, position, "true", 4, JSON_BOOLEAN, ALLOWS_TRUE);
    case 'f':
        return check_literal(parser, schema, position, "false", 5, JSON_BOOLEAN, ALLOWS_FALSE);
    case 'n':
        return check_literal(parser, schema, position, "null", 4, JSON_NULL, ALLOWS_NULL);
    case '-':
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9':
        return check_number(parser, schema, position);
    default:
        return 0;
    }
}

static int
check_document(const unsigned char *data, Py_ssize_t size, int max_depth,
               Py_ssize_t max_members, const SchemaNode *schema)
{
    Parser parser = {data + size, 0, max_depth, max_members};
    const unsigned char *p = skip_whitespace(data, parser.end);
    int result;

    if (p >= parser.end) {
        return 0;
    }
    result = check_value(&parser, schema, &p);
    if (result != 1) {
        return result;
    }
    return skip_whitespace(p, parser.end) == parser.end; /* no trailing data */
}

/* --- compiling ---------------------------------------------------------------- */

/* Results of the compile functions. */
enum { COMPILE_FAILED = -1, COMPILE_DECLINED = 0, COMPILED = 1 };

typedef struct {
    /* Builds a jsonschema-rs validator for a schema of one keyword. */
    PyObject *factory;
    /* The str objects whose UTF-8 the nodes point into. */
    PyObject *strings;
} Compiler;

/* Keywords without effect on validation, which may appear anywhere. */
static const char *const annotation_keywords[] = {
    "title", "description", "default", "examples", "$comment", "deprecated", "readOnly",
    "writeOnly", NULL,
};

/* The keywords that compile_keywords reads. */
static const char *const supported_keywords[] = {
    "type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
    "uniqueItems", "minLength", "maxLength", "minProperties", "maxProperties", "enum", "const",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "pattern", "format", NULL,
};

static int
keyword_in(PyObject *name, const char *const *keywords)
{
    for (const char *const *keyword = keywords; *keyword != NULL; keyword++) {
        if (PyUnicode_CompareWithASCIIString(name, *keyword) == 0) {
            return 1;
        }
    }
    return 0;
}

static AllowedValues *
new_allowed_values(Py_ssize_t capacity)
{
    AllowedValues *allowed = PyMem_Calloc(1, sizeof(AllowedValues));
    if (allowed == NULL) {
        return NULL;
    }
    allowed->strings = PyMem_Calloc((size_t)capacity + 1, sizeof(const char *));
    allowed->string_lengths = PyMem_Calloc((size_t)capacity + 1, sizeof(Py_ssize_t));
    allowed->integers = PyMem_Calloc((size_t)capacity + 1, sizeof(int64_t));
    if (allowed->strings == NULL || allowed->string_lengths == NULL ||
        allowed->integers == NULL) {
        PyMem_Free(allowed->strings);
        PyMem_Free(allowed->string_lengths);
        PyMem_Free(allowed->integers);
        PyMem_Free(allowed);
        return NULL;
    }
    return allowed;
}

static void
free_allowed_values(AllowedValues *allowed)
{
    if (allowed != NULL) {
        PyMem_Free(allowed->strings);
        PyMem_Free(allowed->string_lengths);
        PyMem_Free(allowed->integers);
        PyMem_Free(allowed);
    }
}

static void
free_node(SchemaNode *node)
{
    if (node == NULL || node == &any_schema || node == &false_schema) {
        return;
    }
    for (int i = 0; i < node->property_count; i++) {
        free_node(node->properties[i].schema);
    }
    PyMem_Free(node->properties);
    free_node(node->additional);
    free_node(node->items);
    free_allowed_values(node->enum_values);
    free_allowed_values(node->const_value);
    Py_XDECREF(node->pattern_is_valid);
    Py_XDECREF(node->format_is_valid);
    PyMem_Free(node);
}

/*
 * Store the UTF-8 of the str `text` in `utf8` and `length`, and keep `text`
 * alive in the compiler's list. Returns COMPILE_DECLINED for a str with a
 * lone surrogate, which has no UTF-8 and which no parsed string equals.
 */
static int
keep_utf8(Compiler *compiler, PyObject *text, const char **utf8, Py_ssize_t *length)
{
    *utf8 = PyUnicode_AsUTF8AndSize(text, length);
    if (*utf8 == NULL) {
        if (PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
            PyErr_Clear();
            return COMPILE_DECLINED;
        }
        return COMPILE_FAILED;
    }
    return PyList_Append(compiler->strings, text) < 0 ? COMPILE_FAILED : COMPILED;
}

/* Read a count such as minLength: an int from 0 to PY_SSIZE_T_MAX. */
static int
compile_count(PyObject *value, Py_ssize_t *count)
{
    if (!PyLong_Check(value) || PyBool_Check(value)) {
        return COMPILE_DECLINED;
    }
    *count = PyLong_AsSsize_t(value);
    if (*count == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return COMPILE_FAILED;
        }
        PyErr_Clear();
        return COMPILE_DECLINED;
    }
    return *count >= 0 ? COMPILED : COMPILE_DECLINED;
}

static int
compile_bound(PyObject *value, Bound *bound)
{
    /* Doubles represent the integers up to 2^53 exactly. */
    const int64_t exact_limit = (int64_t)1 << 53;

    if (PyLong_Check(value) && !PyBool_Check(value)) {
        int overflow;
        long long integer = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (integer == -1 && PyErr_Occurred()) {
            return COMPILE_FAILED;
        }
        if (overflow) {
            return COMPILE_DECLINED;
        }
        bound->has_integer = 1;
        bound->integer = integer;
        if (integer >= -exact_limit && integer <= exact_limit) {
            bound->has_real = 1;
            bound->real = (double)integer;
        }
    }
    else if (PyFloat_Check(value)) {
        double real = PyFloat_AS_DOUBLE(value);
        if (!isfinite(real)) {
            return COMPILE_DECLINED;
        }
        bound->has_real = 1;
        bound->real = real;
        /* Up to 2^53, the shortest decimal string of an integral double is
         * its exact value, which jsonschema-rs then compares (see Bound). */
        if (real == floor(real) && real >= -(double)exact_limit && real <= (double)exact_limit) {
            bound->has_integer = 1;
            bound->integer = (int64_t)real;
        }
    }
    else {
        return COMPILE_DECLINED;
    }
    bound->present = 1;
    return COMPILED;
}

/* Compile the values of an enum, or of a const as a list of one. */
static int
compile_allowed_values(Compiler *compiler, PyObject *values, AllowedValues **out)
{
    Py_ssize_t count;
    AllowedValues *allowed;

    if (!PyList_Check(values)) {
        return COMPILE_DECLINED;
    }
    count = PyList_GET_SIZE(values);
    allowed = new_allowed_values(count);
    if (allowed == NULL) {
        PyErr_NoMemory();
        return COMPILE_FAILED;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *value = PyList_GET_ITEM(values, i);
        if (value == Py_None) {
            allowed->literals |= ALLOWS_NULL;
        }
        else if (value == Py_True) {
            allowed->literals |= ALLOWS_TRUE;
        }
        else if (value == Py_False) {
            allowed->literals |= ALLOWS_FALSE;
        }
        else if (PyLong_CheckExact(value)) {
            int overflow;
            long long integer = PyLong_AsLongLongAndOverflow(value, &overflow);
            if (integer == -1 && PyErr_Occurred()) {
                free_allowed_values(allowed);
                return COMPILE_FAILED;
            }
            /* An integer beyond int64 cannot equal a literal that `parse` accepts. */
            if (!overflow) {
                allowed->integers[allowed->integer_count++] = integer;
            }
        }
        else if (PyUnicode_CheckExact(value)) {
            Py_ssize_t index = allowed->string_count;
            int result = keep_utf8(compiler, value, &allowed->strings[index],
                                   &allowed->string_lengths[index]);
            if (result == COMPILE_FAILED) {
                free_allowed_values(allowed);
                return COMPILE_FAILED;
            }
            /* A declined str has a lone surrogate and cannot equal a parsed string. */
            if (result == COMPILED) {
                allowed->string_count++;
            }
        }
        else {
            free_allowed_values(allowed);
            return COMPILE_DECLINED; /* a float, an array or an object */
        }
    }
    *out = allowed;
    return COMPILED;
}

static unsigned
type_bits(PyObject *name)
{
    static const struct {
        const char *name;
        unsigned bits;
    } types[] = {
        {"null", JSON_NULL},       {"boolean", JSON_BOOLEAN},
        {"object", JSON_OBJECT},   {"array", JSON_ARRAY},
        {"string", JSON_STRING},   {"integer", JSON_INTEGER},
        {"number", JSON_INTEGER | JSON_FRACTIONAL},
    };

    if (!PyUnicode_Check(name)) {
        return 0;
    }
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (PyUnicode_CompareWithASCIIString(name, types[i].name) == 0) {
            return types[i].bits;
        }
    }
    return 0;
}

static int
compile_type(PyObject *value, unsigned *types)
{
    if (PyList_Check(value)) {
        *types = 0;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(value); i++) {
            unsigned bits = type_bits(PyList_GET_ITEM(value, i));
            if (bits == 0) {
                return COMPILE_DECLINED;
            }
            *types |= bits;
        }
        return COMPILED;
    }
    *types = type_bits(value);
    return *types != 0 ? COMPILED : COMPILE_DECLINED;
}

/* Build the validator of `{keyword: value}` with the factory and store its is_valid. */
static int
compile_sub_validator(Compiler *compiler, const char *keyword, PyObject *value,
                      PyObject **is_valid)
{
    PyObject *schema, *validator;

    if (!PyUnicode_Check(value)) {
        return COMPILE_DECLINED;
    }
    schema = Py_BuildValue("{sO}", keyword, value);
    if (schema == NULL) {
        return COMPILE_FAILED;
    }
    validator = PyObject_CallOneArg(compiler->factory, schema);
    Py_DECREF(schema);
    if (validator == NULL) {
        return COMPILE_FAILED;
    }
    *is_valid = PyObject_GetAttrString(validator, "is_valid");
    Py_DECREF(validator);
    return *is_valid != NULL ? COMPILED : COMPILE_FAILED;
}

static int compile_node(Compiler *compiler, PyObject *schema, int is_root, SchemaNode **out);

/* Add `properties` and `required` to `node`. */
static int
compile_properties(Compiler *compiler, PyObject *properties, PyObject *required,
                   SchemaNode *node)
{
    Py_ssize_t capacity = 0, position = 0;
    PyObject *name, *member;
    int result;

    if ((properties != NULL && !PyDict_Check(properties)) ||
        (required != NULL && !PyList_Check(required))) {
        return COMPILE_DECLINED;
    }
    capacity = (properties != NULL ? PyDict_GET_SIZE(properties) : 0) +
               (required != NULL ? PyList_GET_SIZE(required) : 0);
    node->properties = PyMem_Calloc((size_t)capacity + 1, sizeof(Property));
    if (node->properties == NULL) {
        PyErr_NoMemory();
        return COMPILE_FAILED;
    }

    while (properties != NULL && PyDict_Next(properties, &position, &name, &member)) {
        Property *property = &node->properties[node->property_count];
        if (!PyUnicode_Check(name) || node->property_count == MAX_PROPERTIES) {
            return COMPILE_DECLINED;
        }
        result = keep_utf8(compiler, name, &property->name, &property->length);
        if (result != COMPILED) {
            return result;
        }
        result = compile_node(compiler, member, 0, &property->schema);
        if (result != COMPILED) {
            return result;
        }
        node->property_count++;
    }

    for (Py_ssize_t i = 0; required != NULL && i < PyList_GET_SIZE(required); i++) {
        PyObject *required_name = PyList_GET_ITEM(required, i);
        const char *utf8;
        Py_ssize_t length;
        int index;

        if (!PyUnicode_Check(required_name)) {
            return COMPILE_DECLINED;
        }
        result = keep_utf8(compiler, required_name, &utf8, &length);
        if (result != COMPILED) {
            return result;
        }
        index = find_property(node, (const unsigned char *)utf8, length);
        if (index < 0) {
            if (node->property_count == MAX_PROPERTIES) {
                return COMPILE_DECLINED;
            }
            index = node->property_count++;
            node->properties[index].name = utf8;
            node->properties[index].length = length;
        }
        node->required |= (uint64_t)1 << index;
    }
    return COMPILED;
}

/* Read each keyword of the dict `schema` into `node`. */
static int
compile_keywords(Compiler *compiler, PyObject *schema, SchemaNode *node)
{
    static const struct {
        const char *keyword;
        size_t offset;
    } counts[] = {
        {"minItems", offsetof(SchemaNode, min_items)},
        {"maxItems", offsetof(SchemaNode, max_items)},
        {"minLength", offsetof(SchemaNode, min_length)},
        {"maxLength", offsetof(SchemaNode, max_length)},
        {"minProperties", offsetof(SchemaNode, min_properties)},
        {"maxProperties", offsetof(SchemaNode, max_properties)},
    };
    static const struct {
        const char *keyword;
        size_t offset;
    } bounds[] = {
        {"minimum", offsetof(SchemaNode, minimum)},
        {"maximum", offsetof(SchemaNode, maximum)},
        {"exclusiveMinimum", offsetof(SchemaNode, exclusive_minimum)},
        {"exclusiveMaximum", offsetof(SchemaNode, exclusive_maximum)},
    };
    PyObject *value, *properties, *required;
    int result = COMPILED;

    /* The dict contains str keys only, so the lookups below raise no error. */
    if ((value = PyDict_GetItemString(schema, "type")) != NULL) {
        result = compile_type(value, &node->types);
        if (result != COMPILED) {
            return result;
        }
    }

    properties = PyDict_GetItemString(schema, "properties");
    required = PyDict_GetItemString(schema, "required");
    if (properties != NULL || required != NULL) {
        result = compile_properties(compiler, properties, required, node);
        if (result != COMPILED) {
            return result;
        }
    }
    if ((value = PyDict_GetItemString(schema, "additionalProperties")) != NULL) {
        result = compile_node(compiler, value, 0, &node->additional);
        if (result != COMPILED) {
            return result;
        }
    }
    if ((value = PyDict_GetItemString(schema, "items")) != NULL) {
        result = compile_node(compiler, value, 0, &node->items);
        if (result != COMPILED) {
            return result;
        }
    }
    if ((value = PyDict_GetItemString(schema, "uniqueItems")) != NULL && value != Py_False) {
        return COMPILE_DECLINED;
    }

    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        if ((value = PyDict_GetItemString(schema, counts[i].keyword)) != NULL) {
            result = compile_count(value, (Py_ssize_t *)((char *)node + counts[i].offset));
            if (result != COMPILED) {
                return result;
            }
        }
    }
    for (size_t i = 0; i < sizeof(bounds) / sizeof(bounds[0]); i++) {
        if ((value = PyDict_GetItemString(schema, bounds[i].keyword)) != NULL) {
            result = compile_bound(value, (Bound *)((char *)node + bounds[i].offset));
            if (result != COMPILED) {
                return result;
            }
        }
    }

    if ((value = PyDict_GetItemString(schema, "enum")) != NULL) {
        result = compile_allowed_values(compiler, value, &node->enum_values);
        if (result != COMPILED) {
            return result;
        }
    }
    if ((value = PyDict_GetItemString(schema, "const")) != NULL) {
        PyObject *values = PyList_New(1);
        if (values == NULL) {
            return COMPILE_FAILED;
        }
        PyList_SET_ITEM(values, 0, Py_NewRef(value));
        result = compile_allowed_values(compiler, values, &node->const_value);
        Py_DECREF(values);
        if (result != COMPILED) {
            return result;
        }
    }

    if ((value = PyDict_GetItemString(schema, "pattern")) != NULL) {
        result = compile_sub_validator(compiler, "pattern", value, &node->pattern_is_valid);
        if (result != COMPILED) {
            return result;
        }
    }
    if ((value = PyDict_GetItemString(schema, "format")) != NULL) {
        result = compile_sub_validator(compiler, "format", value, &node->format_is_valid);
    }
    return result;
}

/* Return whether `value` is draft 2020-12, the only $schema that JsonSchemaValidator loads. */
static int
is_draft_2020_12(PyObject *value)
{
    return PyUnicode_Check(value) &&
           (PyUnicode_CompareWithASCIIString(
                value, "https://json-schema.org/draft/2020-12/schema") == 0 ||
            PyUnicode_CompareWithASCIIString(
                value, "https://json-schema.org/draft/2020-12/schema#") == 0);
}

/* Compile `schema`, a bool or a dict, into `out`. */
static int
compile_node(Compiler *compiler, PyObject *schema, int is_root, SchemaNode **out)
{
    Py_ssize_t position = 0;
    PyObject *name, *value;
    SchemaNode *node;
    int result;

    if (schema == Py_True) {
        *out = &any_schema;
        return COMPILED;
    }
    if (schema == Py_False) {
        *out = &false_schema;
        return COMPILED;
    }
    if (!PyDict_Check(schema)) {
        return COMPILE_DECLINED;
    }
    /* Any keyword outside the subset declines the whole schema, because
     * jsonschema-rs may apply it: it checks `dependencies` of older drafts
     * under draft 2020-12, for one. */
    while (PyDict_Next(schema, &position, &name, &value)) {
        if (!PyUnicode_CheckExact(name)) {
            return COMPILE_DECLINED;
        }
        if (keyword_in(name, supported_keywords) || keyword_in(name, annotation_keywords)) {
            continue;
        }
        if (is_root && PyUnicode_CompareWithASCIIString(name, "$id") == 0) {
            continue; /* only a $ref, which the subset excludes, reads it */
        }
        if (is_root && PyUnicode_CompareWithASCIIString(name, "$schema") == 0 &&
            is_draft_2020_12(value)) {
            continue;
        }
        return COMPILE_DECLINED;
    }

    node = PyMem_Calloc(1, sizeof(SchemaNode));
    if (node == NULL) {
        PyErr_NoMemory();
        return COMPILE_FAILED;
    }
    node->types = JSON_ANY;
    node->additional = &any_schema;
    node->items = &any_schema;
    node->max_properties = PY_SSIZE_T_MAX;
    node->max_items = PY_SSIZE_T_MAX;
    node->max_length = PY_SSIZE_T_MAX;

    /* A schema from YAML can contain itself through an alias. */
    if (Py_EnterRecursiveCall(" while compiling a JSON Schema")) {
        PyMem_Free(node);
        return COMPILE_FAILED;
    }
    result = compile_keywords(compiler, schema, node);
    Py_LeaveRecursiveCall();
    if (result != COMPILED) {
        free_node(node);
        return result;
    }
    *out = node;
    return COMPILED;
}

/* A compiled schema, which owns its tree of nodes. */
typedef struct {
    PyObject_HEAD
    SchemaNode *root;
    PyObject *strings; /* the str objects whose UTF-8 the nodes point into */
} CompiledSchema;

static void
compiled_schema_dealloc(CompiledSchema *self)
{
    free_node(self->root);
    Py_XDECREF(self->strings);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject CompiledSchemaType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ringwall.gateway.validation._strict_json.CompiledSchema",
    .tp_basicsize = sizeof(CompiledSchema),
    .tp_dealloc = (destructor)compiled_schema_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = PyDoc_STR("A JSON Schema compiled by compile_schema, for check."),
};

/* Read the max_depth and max_members arguments of parse and check. Returns
 * 0, or -1 with an exception set. */
static int
read_limits(PyObject *depth_argument, PyObject *members_argument, int *max_depth,
            Py_ssize_t *max_members)
{
    long depth = PyLong_AsLong(depth_argument);
    if (depth == -1 && PyErr_Occurred()) {
        return -1;
    }
    *max_members = PyLong_AsSsize_t(members_argument);
    if (*max_members == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (depth < 1 || depth > MAX_DEPTH_LIMIT) {
        PyErr_Format(PyExc_ValueError, "max_depth must be between 1 and %d, got %ld",
                     MAX_DEPTH_LIMIT, depth);
        return -1;
    }
    if (*max_members < 1) {
        PyErr_Format(PyExc_ValueError, "max_members must be at least 1, got %zd", *max_members);
        return -1;
    }
    *max_depth = (int)depth;
    return 0;
}

PyDoc_STRVAR(parse_doc,
"parse(body, max_depth, max_members, /)\n--\n\n"
"Return the document of `body` if parse_strict_json accepts it, else REJECTED.\n\n"
"`body` is bytes or another buffer. Raises ValueError when max_depth is not\n"
"between 1 and 500 or max_members is less than 1.");

static PyObject *
strict_json_parse(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    int max_depth;
    Py_ssize_t max_members;
    Py_buffer view;
    PyObject *document;

    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError,
                     "parse() takes exactly 3 arguments (body, max_depth, max_members), got %zd",
                     nargs);
        return NULL;
    }
    if (read_limits(args[1], args[2], &max_depth, &max_members) < 0) {
        return NULL;
    }

    if (PyBytes_CheckExact(args[0])) {
        document = parse_document((const unsigned char *)PyBytes_AS_STRING(args[0]),
                                  PyBytes_GET_SIZE(args[0]), max_depth, max_members);
    }
    else {
        /* The export keeps a bytearray from being resized while it is read. */
        if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
            return NULL;
        }
        document = parse_document((const unsigned char *)view.buf, view.len, max_depth,
                                  max_members);
        PyBuffer_Release(&view);
    }
    if (document == NULL && !PyErr_Occurred()) {
        return Py_NewRef(rejected);
    }
    return document;
}

PyDoc_STRVAR(compile_schema_doc,
"compile_schema(schema, sub_validator_factory, /)\n--\n\n"
"Compile `schema` for check, or return None when it uses a keyword outside the subset.\n\n"
"`sub_validator_factory` takes a schema of one keyword, {\"pattern\": ...} or\n"
"{\"format\": ...}, and returns an object whose is_valid(str) returns what the\n"
"full validator returns for that keyword.");

static PyObject *
strict_json_compile_schema(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Compiler compiler;
    SchemaNode *root;
    CompiledSchema *compiled;
    int result;

    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError,
                     "compile_schema() takes exactly 2 arguments (schema, "
                     "sub_validator_factory), got %zd",
                     nargs);
        return NULL;
    }
    compiler.factory = args[1];
    compiler.strings = PyList_New(0);
    if (compiler.strings == NULL) {
        return NULL;
    }
    result = compile_node(&compiler, args[0], 1, &root);
    if (result != COMPILED) {
        Py_DECREF(compiler.strings);
        return result == COMPILE_FAILED ? NULL : Py_NewRef(Py_None);
    }
    compiled = PyObject_New(CompiledSchema, &CompiledSchemaType);
    if (compiled == NULL) {
        free_node(root);
        Py_DECREF(compiler.strings);
        return NULL;
    }
    compiled->root = root;
    compiled->strings = compiler.strings;
    return (PyObject *)compiled;
}

PyDoc_STRVAR(check_doc,
"check(body, compiled, max_depth, max_members, /)\n--\n\n"
"Return True only if parse accepts `body` and its document is valid for `compiled`.\n\n"
"False means rejected or not decided: run parse and the full validator.\n"
"Raises ValueError for the limits that parse rejects.");

static PyObject *
strict_json_check(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    int max_depth, result;
    Py_ssize_t max_members;
    Py_buffer view;
    const SchemaNode *root;

    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError,
                     "check() takes exactly 4 arguments (body, compiled, max_depth, "
                     "max_members), got %zd",
                     nargs);
        return NULL;
    }
    if (!PyObject_TypeCheck(args[1], &CompiledSchemaType)) {
        PyErr_Format(PyExc_TypeError, "check() expects a CompiledSchema, got %.100s",
                     Py_TYPE(args[1])->tp_name);
        return NULL;
    }
    if (read_limits(args[2], args[3], &max_depth, &max_members) < 0) {
        return NULL;
    }
    root = ((CompiledSchema *)args[1])->root;

    if (PyBytes_CheckExact(args[0])) {
        result = check_document((const unsigned char *)PyBytes_AS_STRING(args[0]),
                                PyBytes_GET_SIZE(args[0]), max_depth, max_members, root);
    }
    else {
        /* The export keeps a bytearray from being resized while it is read,
         * including during the calls of is_valid. */
        if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
            return NULL;
        }
        result = check_document((const unsigned char *)view.buf, view.len, max_depth,
                                max_members, root);
        PyBuffer_Release(&view);
    }
    if (result < 0) {
        return NULL;
    }
    return Py_NewRef(result ? Py_True : Py_False);
}

static PyMethodDef strict_json_methods[] = {
    {"parse", (PyCFunction)(void (*)(void))strict_json_parse, METH_FASTCALL, parse_doc},
    {"compile_schema", (PyCFunction)(void (*)(void))strict_json_compile_schema, METH_FASTCALL,
     compile_schema_doc},
    {"check", (PyCFunction)(void (*)(void))strict_json_check, METH_FASTCALL, check_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef strict_json_module = {
    PyModuleDef_HEAD_INIT,
    "_strict_json",
    "Strict JSON parsing in C, equal to parse_strict_json for the bodies it accepts,\n"
    "and a check of a body against a JSON Schema without building the document.",
    -1,
    strict_json_methods,
};

PyMODINIT_FUNC
PyInit__strict_json(void)
{
    PyObject *module = PyModule_Create(&strict_json_module);
    if (module == NULL) {
        return NULL;
    }
    for (int byte = 0; byte < 256; byte++) {
        string_stops[byte] = byte == '"' || byte == '\\' || byte < 0x20 || byte >= 0x80;
    }
    if (rejected == NULL) {
        rejected = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
        if (rejected == NULL) {
            Py_DECREF(module);
            return NULL;
        }
    }
    if (PyModule_AddObjectRef(module, "REJECTED", rejected) < 0 ||
        PyType_Ready(&CompiledSchemaType) < 0 ||
        PyModule_AddObjectRef(module, "CompiledSchema", (PyObject *)&CompiledSchemaType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
