/*
 * Validation of transmission-phase requests: the one place where what a
 * client sends is checked against what was negotiated.  Everything behind
 * it (the request coroutines, the block layer) may assume a valid request.
 */
#ifndef BJ_NBD_NBD_REQUEST_H
#define BJ_NBD_NBD_REQUEST_H

#include <stdbool.h>
#include <stdint.h>

#include "nbd/nbd-wire.h"

/* What a connection negotiated for its export. */
typedef struct NbdTransmitParams {
    uint64_t size;            /* export size in bytes */
    uint16_t tflags;          /* transmission flags sent to the client */
    bool structured;          /* NBD_OPT_STRUCTURED_REPLY acknowledged */
    bool meta_base_allocation;/* base:allocation selected for this export */
    unsigned meta_other;      /* other contexts selected (qemu:...) */
    uint32_t min_block;       /* alignment enforced (1: none) */
    uint32_t max_block;       /* largest READ/WRITE/CACHE length */
} NbdTransmitParams;

typedef enum NbdRequestVerdict {
    NBD_REQ_OK,           /* run it */
    NBD_REQ_ERROR,        /* reply with *nbd_error (after discarding any
                             write payload) and go on */
    NBD_REQ_DISC,         /* NBD_CMD_DISC: finish in-flight work, close */
    NBD_REQ_HARD_CLOSE,   /* protocol violation we cannot recover from */
} NbdRequestVerdict;

typedef struct NbdRequestCheck {
    NbdRequestVerdict verdict;
    uint32_t nbd_error;       /* NBD_REQ_ERROR: the error to send */
    uint32_t payload;         /* bytes of payload that follow the header
                                 (the write data, whatever the verdict
                                 unless HARD_CLOSE) */
    const char *why;          /* for the error chunk and logs */
} NbdRequestCheck;

/* Checks a decoded request against the negotiated parameters. */
NbdRequestCheck nbd_request_check(const NbdTransmitParams *p,
                                  const NbdRequest *req);

#endif
