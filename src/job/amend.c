/*
 * The "amend" job: x-blockdev-amend for a driver with a co_amend entry
 * (see amend.h).  Its body is one step (progress 0/1, then 1/1 whether it
 * worked or not), in the node's context; values are checked there, as
 * qemu checks them in its job.
 */
#include <assert.h>

#include "job/amend.h"

typedef struct AmendJob {
    Job job;
    BlockNode *bs;           /* referenced */
    json_t *opts;            /* BlockdevAmendOptions */
    bool force;
} AmendJob;

static int coroutine_fn amend_run(Job *job, Error **errp)
{
    AmendJob *s = (AmendJob *)job;
    int ret;

    job_progress_set_remaining(job, 1);
    ret = s->bs->drv->co_amend(s->bs, s->opts, s->force, errp);
    job_progress_update(job, 1);
    return ret;
}

static void amend_free(Job *job)
{
    AmendJob *s = (AmendJob *)job;

    json_decref(s->opts);
    bdrv_unref(s->bs);
}

static const JobDriver amend_driver = {
    .type = "amend",
    /* The step runs in the node's context, an iothread's too. */
    .iothread = true,
    .instance_size = sizeof(AmendJob),
    .block_job_events = false,
    .run = amend_run,
    .free = amend_free,
};

Job *amend_job_start(const char *job_id, BlockNode *bs, json_t *options,
                     bool force, Error **errp)
{
    AmendJob *s;

    assert(bs->drv->co_amend);
    s = job_create(job_id, &amend_driver, NULL, bs->ctx, JOB_MANUAL_DISMISS,
                   errp);
    if (!s) {
        return NULL;
    }
    bdrv_ref(bs);
    s->bs = bs;
    s->opts = json_incref(options);
    s->force = force;
    job_start(&s->job);
    return &s->job;
}
