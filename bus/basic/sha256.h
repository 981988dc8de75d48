/* SPDX-License-Identifier: MIT */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

/* SHA-256 for the audit log's hash chain, the AGENTS.md checksums and the contract fingerprint,
 * from libcrypto (OpenSSL's EVP interface): the log's tamper evidence rests on a maintained,
 * tested crypto library, not on our own. These are thin inline wrappers so callers keep one
 * small API and the digest stays byte for byte what FIPS 180-4 defines (the logs written by
 * the earlier in-tree implementation verify unchanged). */

#define CON_SHA256_DIGEST_SIZE 32
#define CON_SHA256_HEX_SIZE 65  /* 64 hex digits + NUL */

typedef struct ConSha256 {
        EVP_MD_CTX *ctx;
        int error;              /* first failure of init/update, reported by final */
} ConSha256;

#define CON_SHA256_INIT ((ConSha256) {})

/* -ENOMEM (or -EIO) when libcrypto cannot set up the context; the state then only reports it. */
static inline int con_sha256_init(ConSha256 *s) {
        *s = CON_SHA256_INIT;
        s->ctx = EVP_MD_CTX_new();
        if (!s->ctx)
                return (s->error = -ENOMEM);
        if (EVP_DigestInit_ex(s->ctx, EVP_sha256(), NULL) != 1)
                return (s->error = -EIO);
        return 0;
}

static inline void con_sha256_update(ConSha256 *s, const void *data, size_t len) {
        if (s->error == 0 && EVP_DigestUpdate(s->ctx, data, len) != 1)
                s->error = -EIO;
}

/* Frees the context in any case; returns the first error of the whole computation. */
static inline int con_sha256_final(ConSha256 *s, uint8_t ret[CON_SHA256_DIGEST_SIZE]) {
        int r = s->error;

        if (r == 0 && EVP_DigestFinal_ex(s->ctx, ret, NULL) != 1)
                r = -EIO;
        EVP_MD_CTX_free(s->ctx);
        *s = CON_SHA256_INIT;
        return r;
}

/* Lower-case hex of a digest, NUL-terminated. */
static inline void con_sha256_to_hex(const uint8_t digest[CON_SHA256_DIGEST_SIZE], char ret[CON_SHA256_HEX_SIZE]) {
        static const char hexdig[] = "0123456789abcdef";

        for (size_t i = 0; i < CON_SHA256_DIGEST_SIZE; i++) {
                ret[2 * i] = hexdig[digest[i] >> 4];
                ret[2 * i + 1] = hexdig[digest[i] & 15];
        }
        ret[2 * CON_SHA256_DIGEST_SIZE] = '\0';
}

/* Whether the len bytes at s are a digest's hex as con_sha256_to_hex() writes it: 64 lower-case
 * hex digits (s need not be NUL-terminated). */
static inline bool con_sha256_hex_valid(const char *s, size_t len) {
        if (!s || len != 2 * CON_SHA256_DIGEST_SIZE)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
                        return false;
        return true;
}

/* One-shot helpers (EVP_Digest needs no allocation that can fail in practice, but its result is
 * still checked). */
static inline int con_sha256(const void *data, size_t len, uint8_t ret[CON_SHA256_DIGEST_SIZE]) {
        return EVP_Digest(data, len, ret, NULL, EVP_sha256(), NULL) == 1 ? 0 : -EIO;
}

static inline int con_sha256_hex(const void *data, size_t len, char ret[CON_SHA256_HEX_SIZE]) {
        uint8_t d[CON_SHA256_DIGEST_SIZE];
        int r = con_sha256(data, len, d);

        if (r < 0)
                return r;
        con_sha256_to_hex(d, ret);
        return 0;
}
