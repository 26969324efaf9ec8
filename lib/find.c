/*
 * Finding model descriptions and weights by name along a search path of
 * folders, so `-m resnet50` works like a command found on $PATH.
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

static bool is_file(const char *path) {
    struct stat st;

    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* dir + "/" + name + suffix as a new string, or NULL when out of memory. */
static char *join(const char *dir, size_t dir_len, const char *name,
                  const char *suffix) {
    size_t len = dir_len + 1 + strlen(name) + strlen(suffix) + 1;
    char *s = malloc(len);

    if (s) {
        snprintf(s, len, "%.*s/%s%s", (int)dir_len, dir, name, suffix);
    }
    return s;
}

/* Why path cannot be opened as a regular file, as an errno value. */
static int why_not_file(const char *path) {
    struct stat st;

    if (stat(path, &st) != 0) {
        return errno;
    }
    return S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
}

int resnet_find_file(char **out, const char *name, const char *suffix,
                     const char *search_path, struct resnet_error *err) {
    const char *dir = search_path ? search_path : "";
    const char *sfx[2] = {"", suffix ? suffix : ""};

    *out = NULL;

    // A path is taken as it is.
    if (strchr(name, '/') || is_file(name)) {
        int e = is_file(name) ? 0 : why_not_file(name);

        if (e == EINVAL) {
            return rn_error(err, RESNET_EIO, 0,
                            "cannot open '%s': not a regular file", name);
        }
        if (e) {
            return rn_error(err, RESNET_EIO, e, "cannot open '%s'", name);
        }
        *out = strdup(name);
        return *out ? RESNET_OK
                    : rn_error(err, RESNET_ENOMEM, 0, "out of memory");
    }

    // Each folder of the path in turn, the bare name before name+suffix.
    while (*dir) {
        size_t len = strcspn(dir, ":");

        for (int i = 0; i < 2 && len > 0; i++) {
            char *path;

            if (i == 1 && !suffix) {
                break;
            }
            path = join(dir, len, name, sfx[i]);
            if (!path) {
                return rn_error(err, RESNET_ENOMEM, 0, "out of memory");
            }
            if (is_file(path)) {
                *out = path;
                return RESNET_OK;
            }
            free(path);
        }
        dir += len + (dir[len] == ':');
    }
    return rn_error(err, RESNET_EIO, 0,
                    "cannot find '%s' (searched %s)", name,
                    search_path && *search_path ? search_path
                                                : "an empty path");
}

char *resnet_search_path(void) {
    const char *env = getenv("RESNET_MODEL_PATH");
    size_t len;
    char *path;

    if (!env || !*env) {
        return strdup(RESNET_MODELDIR);
    }
    len = strlen(env) + 1 + strlen(RESNET_MODELDIR) + 1;
    path = malloc(len);
    if (path) {
        snprintf(path, len, "%s:%s", env, RESNET_MODELDIR);
    }
    return path;
}
