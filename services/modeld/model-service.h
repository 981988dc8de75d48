/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "names.h"

#define CON_MODELS_USER      "con-models"
#define CON_MODELS_ENV_PATH  "/etc/con/env"
#define CON_MODELS_LOG_DIR   "/srv/con/logs/models"

typedef struct ModelsOptions {
        const char *config_path;        /* NULL: CON_CONFIG_PATH */
        const char *env_path;           /* NULL: CON_MODELS_ENV_PATH */
        const char *log_dir;            /* NULL: CON_MODELS_LOG_DIR; "" disables the usage log */
} ModelsOptions;

typedef struct Models Models;

/* On the service's event loop and bus connection (con_service_start()). */
int models_new(const ModelsOptions *o, sd_event *event, sd_bus *bus, Models **ret);
/* Publishes the object and takes the bus name; SIGHUP reloads the config and keys. */
int models_start(Models *m);
Models *models_free(Models *m);
static inline void models_freep(Models **m) {
        models_free(*m);
}

/* The introspection XML of the vtable (--bus-introspect, test-introspect). */
int models_introspect_xml(char **ret);
