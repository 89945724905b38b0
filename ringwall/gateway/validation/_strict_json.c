/*
 * Strict JSON parsing in C: one pass over the body that builds the document.
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

/* Convert a float literal as Python's float() does; reject one that overflows. */
static PyObject *
convert_float(const unsigned char *start, Py_ssize_t length)
{
    char stack_buffer[FLOAT_BUFFER];
    char *buffer = stack_buffer;
    char *stop;
    double value;

    if (length >= FLOAT_BUFFER) {
        buffer = PyMem_Malloc((size_t)length + 1);
        if (buffer == NULL) {
            return PyErr_NoMemory();
        }
    }
    memcpy(buffer, start, (size_t)length);
    buffer[length] = '\0';
    /* With no overflow exception, an overflow returns an infinity. */
    value = PyOS_string_to_double(buffer, &stop, NULL);
    if (buffer != stack_buffer) {
        PyMem_Free(buffer);
    }
    if (value == -1.0 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError)) {
            return NULL;
        }
        /* A literal that float() cannot read: the Python parser decides. */
        PyErr_Clear();
        return NULL;
    }
    if (!isfinite(value)) {
        return NULL;
    }
    return PyFloat_FromDouble(value);
}

static PyObject *
parse_number(Parser *parser, const unsigned char **position)
{
    const unsigned char *start = *position, *p = start, *end = parser->end;
    const unsigned char *digits, *digits_end;
    const unsigned char *fraction = NULL, *fraction_end = NULL;
    const unsigned char *exponent = NULL, *exponent_end = NULL;
    int negative = 0, is_float = 0, exponent_negative = 0;
    uint64_t magnitude = 0;
    double value;

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
        return NULL;
    }
    digits_end = p;
    if (p < end && *p == '.') {
        p++;
        if (p >= end || !is_digit(*p)) {
            return NULL;
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
            return NULL;
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
        if (convert_short_float(digits, digits_end, fraction, fraction_end, exponent,
                                exponent_end, exponent_negative, negative, &value)) {
            return PyFloat_FromDouble(value);
        }
        return convert_float(start, p - start);
    }

    /* 2. An integer in the signed 64-bit range. 19 digits cannot overflow
     * uint64_t, and without leading zeros more digits are out of range. */
    if (digits_end - digits > 19) {
        return NULL;
    }
    for (const unsigned char *digit = digits; digit < digits_end; digit++) {
        magnitude = magnitude * 10 + (uint64_t)(*digit - '0');
    }
    if (negative) {
        if (magnitude > (uint64_t)INT64_MAX + 1) {
            return NULL;
        }
        if (magnitude == (uint64_t)INT64_MAX + 1) {
            return PyLong_FromLongLong(INT64_MIN);
        }
        return PyLong_FromLongLong(-(long long)magnitude);
    }
    if (magnitude > (uint64_t)INT64_MAX) {
        return NULL;
    }
    return PyLong_FromLongLong((long long)magnitude);
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
        int failed;

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
        p = skip_whitespace(*position, end);
        if (p < end && *p == ',') {
            p = skip_whitespace(p + 1, end);
            continue;
        }
        if (p < end && *p == ']') {
            *position = p + 1;
            break;
        }
        goto fail;
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
        int failed;

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
        p = skip_whitespace(*position, end);
        if (p < end && *p == ',') {
            p = skip_whitespace(p + 1, end);
            continue;
        }
        if (p < end && *p == '}') {
            *position = p + 1;
            break;
        }
        goto fail;
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

PyDoc_STRVAR(parse_doc,
"parse(body, max_depth, max_members, /)\n--\n\n"
"Return the document of `body` if parse_strict_json accepts it, else REJECTED.\n\n"
"`body` is bytes or another buffer. Raises ValueError when max_depth is not\n"
"between 1 and 500 or max_members is less than 1.");

static PyObject *
strict_json_parse(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    long max_depth;
    Py_ssize_t max_members;
    Py_buffer view;
    PyObject *document;

    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError,
                     "parse() takes exactly 3 arguments (body, max_depth, max_members), got %zd",
                     nargs);
        return NULL;
    }
    max_depth = PyLong_AsLong(args[1]);
    if (max_depth == -1 && PyErr_Occurred()) {
        return NULL;
    }
    max_members = PyLong_AsSsize_t(args[2]);
    if (max_members == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (max_depth < 1 || max_depth > MAX_DEPTH_LIMIT) {
        PyErr_Format(PyExc_ValueError, "max_depth must be between 1 and %d, got %ld",
                     MAX_DEPTH_LIMIT, max_depth);
        return NULL;
    }
    if (max_members < 1) {
        PyErr_Format(PyExc_ValueError, "max_members must be at least 1, got %zd", max_members);
        return NULL;
    }

    if (PyBytes_CheckExact(args[0])) {
        document = parse_document((const unsigned char *)PyBytes_AS_STRING(args[0]),
                                  PyBytes_GET_SIZE(args[0]), (int)max_depth, max_members);
    }
    else {
        /* The export keeps a bytearray from being resized while it is read. */
        if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
            return NULL;
        }
        document = parse_document((const unsigned char *)view.buf, view.len, (int)max_depth,
                                  max_members);
        PyBuffer_Release(&view);
    }
    if (document == NULL && !PyErr_Occurred()) {
        return Py_NewRef(rejected);
    }
    return document;
}

static PyMethodDef strict_json_methods[] = {
    {"parse", (PyCFunction)(void (*)(void))strict_json_parse, METH_FASTCALL, parse_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef strict_json_module = {
    PyModuleDef_HEAD_INIT,
    "_strict_json",
    "Strict JSON parsing in C, equal to parse_strict_json for the bodies it accepts.",
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
    if (PyModule_AddObjectRef(module, "REJECTED", rejected) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
