/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* SHA-256 (FIPS 180-4), small and portable. Used by the audit log's hash chain. */

#define CON_SHA256_DIGEST_SIZE 32
#define CON_SHA256_HEX_SIZE 65  /* 64 hex digits + NUL */

typedef struct ConSha256 {
        uint32_t h[8];
        uint64_t total;         /* bytes hashed so far */
        uint8_t block[64];
        size_t fill;            /* bytes waiting in block */
} ConSha256;

void con_sha256_init(ConSha256 *s);
void con_sha256_update(ConSha256 *s, const void *data, size_t len);
void con_sha256_final(ConSha256 *s, uint8_t ret[CON_SHA256_DIGEST_SIZE]);

/* One-shot helpers. */
void con_sha256(const void *data, size_t len, uint8_t ret[CON_SHA256_DIGEST_SIZE]);
/* Lower-case hex of a digest, NUL-terminated. */
void con_sha256_to_hex(const uint8_t digest[CON_SHA256_DIGEST_SIZE], char ret[CON_SHA256_HEX_SIZE]);
void con_sha256_hex(const void *data, size_t len, char ret[CON_SHA256_HEX_SIZE]);
