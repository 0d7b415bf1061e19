/* Host reference for the compute workload: prints checksum(n, rounds) as the guest does.
 *   compute-ref [n] [rounds]   ->   0x<16 hex digits> */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "compute_kernel.h"

int main(int argc, char **argv)
{
	uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 0) : COMPUTE_DEFAULT_N;
	unsigned rounds = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 0) : COMPUTE_DEFAULT_ROUNDS;
	printf("0x%016" PRIx64 "\n", compute_range(0, n, rounds));
	return 0;
}
