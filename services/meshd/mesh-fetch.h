/* SPDX-License-Identifier: MIT */
/* Pulling from a JetStream pull subscription with libnats 3.4.1 (Debian 12) without its fetch
 * overflow (docs/MULTIHOST.md, "A crash seen once"). Used by con-meshd and the tests' mesh-probe. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <nats/nats.h>

/* libnats 3.4.1's _fetch() first takes the C messages already queued in the subscription, then
 * asks the server for BATCH - C and stores that smaller number back as the batch it waits for; its
 * loop runs until the count *equals* it. With C > BATCH / 2 the count is past it already and never
 * equals it: the fetch collects until its deadline and writes every further message past the array
 * of BATCH pointers it allocated. Messages are queued there when a pull request outlives its fetch
 * (the server counts the expiry from when it read the request), and the bug leaves C messages of
 * every request made with C queued still to come. With a batch of 1 the count is 0 or 1 and cannot
 * pass it; queued messages are taken without a request. */
#define MESH_FETCH_BATCH 1

/* One fetch of at most MESH_FETCH_BATCH messages into LIST (natsMsgList_Destroy it), waiting at
 * most WAIT_MS (NO_WAIT: not waiting for the server, e.g. for what is queued). 0 with the
 * messages; -ETIMEDOUT (none came), -ENOENT (NO_WAIT: none there), -EIO (another error, nats.c's
 * last error says which); -EOVERFLOW when the library returned more messages than the batch: it
 * wrote past its own array then, LIST is left empty (nothing in it may be read or freed) and the
 * process's heap is not to be trusted. */
int mesh_fetch(natsSubscription *sub, int64_t wait_ms, bool no_wait, natsMsgList *list);
