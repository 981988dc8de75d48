/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "json-util.h"

const char *con_json_kind(const cJSON *j) {
        if (!j)
                return "nothing";
        if (cJSON_IsString(j))
                return "a string";
        if (cJSON_IsNumber(j))
                return "a number";
        if (cJSON_IsBool(j))
                return "a boolean";
        if (cJSON_IsNull(j))
                return "null";
        if (cJSON_IsArray(j))
                return "an array";
        if (cJSON_IsObject(j))
                return "an object";
        return "something else";
}

cJSON *con_json_create_u64(uint64_t v) {
        char buf[24];  /* 20 digits and the NUL */
        snprintf(buf, sizeof buf, "%" PRIu64, v);
        return cJSON_CreateRaw(buf);
}

cJSON *con_json_add_u64(cJSON *object, const char *key, uint64_t v) {
        cJSON *j = con_json_create_u64(v);
        if (!j)
                return NULL;
        if (!cJSON_AddItemToObject(object, key, j)) {
                cJSON_Delete(j);
                return NULL;
        }
        return j;
}

uint64_t con_json_get_u64(const cJSON *j) {
        if (cJSON_IsRaw(j) && j->valuestring) {
                char *end;
                errno = 0;
                unsigned long long v = strtoull(j->valuestring, &end, 10);
                return errno == 0 && end != j->valuestring && !*end && j->valuestring[0] != '-' ? (uint64_t) v : 0;
        }
        if (cJSON_IsNumber(j) && j->valuedouble >= 0 && j->valuedouble <= 9007199254740992.0 &&
            j->valuedouble == (double) (uint64_t) j->valuedouble)
                return (uint64_t) j->valuedouble;
        return 0;
}
