/* SPDX-License-Identifier: MIT */
/*
 * "host:port" parsing shared by tcp and rdma.
 *
 * Accepted forms: "1.2.3.4:5000", "[::1]:5000", "localhost:5000", "name:5000" (resolved once, at parse time,
 * with getaddrinfo; the first result wins, IPv4 preferred for "localhost" so both ends agree). Port 0..65535
 * (0 only makes sense for a listen address). Anything else is -EINVAL with a log line.
 */
#ifndef RACKVM_INTERCONNECT_ADDR_H
#define RACKVM_INTERCONNECT_ADDR_H

#include <stddef.h>
#include <sys/socket.h>

struct ic_sockaddr {
	struct sockaddr_storage ss;
	socklen_t len;
};

int ic_addr_parse(const char *str, struct ic_sockaddr *out);
/* "1.2.3.4:5000" / "[::1]:5000" into buf; returns buf (always terminated). */
const char *ic_addr_format(const struct ic_sockaddr *a, char *buf, size_t cap);
/* Port of a parsed address (host order). */
unsigned int ic_addr_port(const struct ic_sockaddr *a);

#endif
