/*
 * Files that appear whole or not at all: written to a temporary file
 * beside the target, flushed to disk, then moved into place in one step,
 * so a reader never sees half a file and a failure leaves nothing new.
 * The temporary files open now are listed, so that a signal handler can
 * remove them (resnet_temp_files_remove()).
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/*
 * The temporary files open now, for resnet_temp_files_remove(). A name
 * leaves the list before it is freed or renamed, so a handler that
 * interrupts the writer sees a valid name or NULL. Files beyond the
 * first MAX_TEMPS are not listed (the CLI writes two at once).
 */
#define MAX_TEMPS 8
static char *volatile temps[MAX_TEMPS];

static void list_temp(char *tmp) {
    for (int i = 0; i < MAX_TEMPS; i++) {
        if (!temps[i]) {
            temps[i] = tmp;
            return;
        }
    }
}

static void unlist_temp(const char *tmp) {
    for (int i = 0; i < MAX_TEMPS; i++) {
        if (temps[i] == tmp) {
            temps[i] = NULL;
        }
    }
}

/* "<dir>/.<name>.XXXXXX" for mkstemp(), next to path. */
static char *temp_template(const char *path) {
    const char *slash = strrchr(path, '/');
    size_t dir_len = slash ? (size_t)(slash - path) + 1 : 0;
    size_t len = strlen(path) + sizeof "/..XXXXXX";
    char *tmpl = malloc(len);

    if (tmpl) {
        snprintf(tmpl, len, "%.*s.%s.XXXXXX", (int)dir_len, path,
                 path + dir_len);
    }
    return tmpl;
}

/* EIO with errno EEXIST, without strerror's text after the message. */
static int exists_error(const char *path, struct resnet_error *err) {
    rn_error(err, RESNET_EIO, 0, "cannot write '%s': file exists (use --force to overwrite)",
             path);
    if (err) {
        err->sys_errno = EEXIST;
    }
    return RESNET_EIO;
}

/* Moves tmp to path; without overwrite, fails if path appeared since. */
static int publish(const char *tmp, const char *path, bool overwrite) {
    if (overwrite) {
        return rename(tmp, path) == 0 ? 0 : errno;
    }
    // link() refuses an existing target, where rename() would replace it.
    if (link(tmp, path) == 0) {
        unlink(tmp);
        return 0;
    }
    if (errno != EPERM && errno != ENOTSUP && errno != ENOSYS) {
        return errno;
    }
    // No hard links on this file system: check, then rename.
    if (access(path, F_OK) == 0) {
        return EEXIST;
    }
    return rename(tmp, path) == 0 ? 0 : errno;
}

/* Makes a rename in path's folder durable; failure only costs that. */
static void sync_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, (size_t)(slash - path) + 1)
                      : strdup(".");
    int fd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;

    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(dir);
}

/* Removes f's temporary file after a failure with errno e. */
static int fail(struct rn_atomic *f, int e, struct resnet_error *err) {
    rn_atomic_abort(f);
    return rn_error(err, RESNET_EIO, e, "cannot write '%s'", f->path);
}

int rn_atomic_check(const char *path, bool overwrite,
                    struct resnet_error *err) {
    struct stat sb;

    if (!overwrite && lstat(path, &sb) == 0) {
        return exists_error(path, err);
    }
    return RESNET_OK;
}

int rn_atomic_open(struct rn_atomic *f, const char *path, bool overwrite,
                   struct resnet_error *err) {
    mode_t mask;
    int rc;

    *f = (struct rn_atomic){.path = path, .fd = -1, .overwrite = overwrite};

    // Fail early for an existing file; rn_atomic_commit() checks again.
    if ((rc = rn_atomic_check(path, overwrite, err))) {
        return rc;
    }
    f->tmp = temp_template(path);
    if (!f->tmp) {
        return rn_error(err, RESNET_ENOMEM, 0, "out of memory writing '%s'",
                        path);
    }
    f->fd = mkstemp(f->tmp);
    if (f->fd < 0) {
        rc = rn_error(err, RESNET_EIO, errno,
                      "cannot create a temporary file for '%s'", path);
        free(f->tmp);
        f->tmp = NULL;
        return rc;
    }

    list_temp(f->tmp);

    // mkstemp() makes the file private; give it a plain creat()'s mode.
    // TODO: umask() is process-wide, so a file another thread creates
    // between these two calls ignores the umask; fine for the CLI,
    // revisit if the library is used from threaded programs.
    mask = umask(0);
    umask(mask);
    fchmod(f->fd, 0666 & ~mask);
    return RESNET_OK;
}

int rn_atomic_write(struct rn_atomic *f, const void *buf, size_t n,
                    struct resnet_error *err) {
    const char *p = buf;

    while (n > 0) {
        ssize_t got = write(f->fd, p, n);

        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got <= 0) {
            return fail(f, got < 0 ? errno : EIO, err);
        }
        p += got;
        n -= (size_t)got;
    }
    return RESNET_OK;
}

int rn_atomic_commit(struct rn_atomic *f, struct resnet_error *err) {
    int e = 0;

    // Data on disk before the name, so a crash never shows a short file.
    if (fsync(f->fd) != 0) {
        e = errno;
    }
    if (close(f->fd) != 0 && !e) {
        e = errno;
    }
    f->fd = -1;
    if (e) {
        return fail(f, e, err);
    }

    // Move it into place; until then path is untouched. The name stays
    // listed through the move: unlinking it afterwards is harmless.
    e = publish(f->tmp, f->path, f->overwrite);
    if (e) {
        rn_atomic_abort(f);
        return e == EEXIST ? exists_error(f->path, err)
                           : rn_error(err, RESNET_EIO, e,
                                      "cannot write '%s'", f->path);
    }
    unlist_temp(f->tmp);
    free(f->tmp);
    f->tmp = NULL;
    sync_dir(f->path);
    return RESNET_OK;
}

void rn_atomic_abort(struct rn_atomic *f) {
    if (!f->tmp) {
        return;
    }
    if (f->fd >= 0) {
        close(f->fd);
        f->fd = -1;
    }
    unlink(f->tmp);
    unlist_temp(f->tmp);
    free(f->tmp);
    f->tmp = NULL;
}

void resnet_temp_files_remove(void) {
    for (int i = 0; i < MAX_TEMPS; i++) {
        char *tmp = temps[i];

        if (tmp) {
            unlink(tmp);
        }
    }
}
