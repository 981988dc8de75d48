/* SPDX-License-Identifier: MIT */
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
