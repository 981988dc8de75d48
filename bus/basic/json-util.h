/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdint.h>

#include <cjson/cJSON.h>

#include "macro.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(cJSON *, cJSON_Delete);
#define _cleanup_cjson_ _cleanup_(cJSON_Deletep)

/* The kind of a JSON value for error messages: "an object", "an array", "a string", "a number",
 * "a boolean", "null"; "nothing" for NULL (a missing member), "something else" otherwise. */
const char *con_json_kind(const cJSON *j);

/* An unsigned 64-bit integer as a JSON integer literal. cJSON keeps numbers as doubles: from
 * 2^53 on they lose digits, and cJSON prints integral values from 1e15 on in exponent form
 * (a microsecond timestamp of today came out as 1.79641781710264e+15). The item is a raw
 * literal: read it back with con_json_get_u64(). NULL on out of memory. */
cJSON *con_json_create_u64(uint64_t v);
/* Adds KEY: V to OBJECT (con_json_create_u64). NULL on out of memory. */
cJSON *con_json_add_u64(cJSON *object, const char *key, uint64_t v);
/* The value of an item made by con_json_create_u64() or parsed from JSON (a non-negative
 * integral number up to 2^53); 0 for anything else. */
uint64_t con_json_get_u64(const cJSON *j);
