/* SPDX-License-Identifier: MIT */
/* libFuzzer: the cluster message decoder (cluster/msg.c) on arbitrary payloads. First byte = frame type; an
 * accepted payload must re-encode to exactly the same bytes (nothing is accepted that the encoder would not
 * produce). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t re[CMSG_MAX_LEN];
	struct cmsg m;

	if (size < 1)
		return 0;
	if (cmsg_decode(data[0], data + 1, size - 1, &m) == 0) {
		size_t n = cmsg_encode(&m, re, sizeof(re));

		if (n != size - 1 || memcmp(re, data + 1, n))
			abort();
	}
	return 0;
}
