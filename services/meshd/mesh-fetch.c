/* SPDX-License-Identifier: MIT */
/* Pulling from a JetStream pull subscription with libnats 3.4.1 (mesh-fetch.h). */
#include <errno.h>

#include "mesh-fetch.h"

int mesh_fetch(natsSubscription *sub, int64_t wait_ms, bool no_wait, natsMsgList *list) {
        natsStatus s;

        *list = (natsMsgList) {};
        if (no_wait) {
                jsFetchRequest req;
                jsFetchRequest_Init(&req);
                req.Batch = MESH_FETCH_BATCH;
                req.NoWait = true;
                req.Expires = wait_ms * 1000 * 1000;
                s = natsSubscription_FetchRequest(list, sub, &req);
        } else
                s = natsSubscription_Fetch(list, sub, MESH_FETCH_BATCH, wait_ms, NULL);
        if (s == NATS_OK && list->Count > MESH_FETCH_BATCH) {
                *list = (natsMsgList) {};
                return -EOVERFLOW;
        }
        if (s == NATS_OK)
                return 0;
        return s == NATS_TIMEOUT ? -ETIMEDOUT : s == NATS_NOT_FOUND ? -ENOENT : -EIO;
}
