/* SPDX-License-Identifier: MIT */
#include "task.h"
