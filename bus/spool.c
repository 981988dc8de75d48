/* SPDX-License-Identifier: MIT */
#include "spool.h"
