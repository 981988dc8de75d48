/* SPDX-License-Identifier: MIT */
#pragma once

#include "config.h"

/* AGENTS.md assembly, as in the original: for each root (outer /etc/con, then inner
 * /srv/con/config), read <root>/<layer>/AGENTS.md for the layers base, tiers/<tier>, groups/<g>,
 * roles/<r>, scopes/<s>, agents/<name> (in that order, roots interleaved per layer as the original does),
 * then the inline instructions. Each part is whitespace-trimmed; parts are joined with
 * "\n\n---\n\n" and a final "\n" is added. Missing files are skipped; zero parts is -ENODATA. */
int con_agents_md_assemble(const ConAgent *a, const char * const *roots, char **ret);

/* The skill files for an agent: regular *.md files of <root>/roles/<r>/skills/ for each role,
 * then <root>/agents/<name>/skills/, later ones overriding earlier ones by file name.
 * Returns parallel vectors of file names and absolute source paths, sorted by file name. */
int con_agent_skills(const ConAgent *a, const char * const *roots, char ***ret_names, char ***ret_paths);
