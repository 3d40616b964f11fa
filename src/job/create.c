/*
 * The "create" job: blockdev-create for any driver with a co_create entry.
 *
 * qemu-storage-daemon runs image creation as a job so that the monitor
 * stays responsive; its body is one step (progress 0/1, then 1/1 whether
 * it worked or not) and the job waits concluded for job-dismiss.  Option
 * values are checked by the driver's step, in the job, because that is
 * where qemu checks them: a bad cluster size makes the job fail (error in
 * query-jobs), not the command.
 */
#include <assert.h>
#include <string.h>

#include "block/block.h"
#include "job/create.h"
#include "util/alloc.h"
#include "util/argspec.h"

typedef struct CreateJob {
    Job job;
    json_t *opts;            /* BlockdevCreateOptions */
    const BlockDriver *drv;  /* the one named by opts' "driver" */
} CreateJob;

static int coroutine_fn create_run(Job *job, Error **errp)
{
    CreateJob *s = (CreateJob *)job;
    int ret;

    job_progress_set_remaining(job, 1);
    ret = s->drv->co_create(s->opts, job->id, errp);
    job_progress_update(job, 1);
    return ret;
}

static void create_free(Job *job)
{
    CreateJob *s = (CreateJob *)job;

    json_decref(s->opts);
}

static const JobDriver create_driver = {
    .type = "create",
    .instance_size = sizeof(CreateJob),
    .block_job_events = false,
    .run = create_run,
    .free = create_free,
};

Job *create_job_start(const char *job_id, json_t *options, Error **errp)
{
    const BlockDriver *drv = bdrv_find_driver(arg_str(options, "driver", ""));
    CreateJob *s;

    assert(drv && drv->co_create);
    s = job_create(job_id, &create_driver, NULL, aio_main_context(),
                   JOB_MANUAL_DISMISS, errp);
    if (!s) {
        return NULL;
    }
    s->opts = json_incref(options);
    s->drv = drv;
    job_start(&s->job);
    return &s->job;
}
