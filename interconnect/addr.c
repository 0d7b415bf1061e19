/* SPDX-License-Identifier: MIT */
/* "host:port" parsing (see interconnect/addr.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "interconnect/addr.h"
#include "interconnect/ic.h"
#include "util/log.h"

int ic_addr_parse(const char *str, struct ic_sockaddr *out)
{
	char host[IC_ADDR_MAX];
	const char *port_str, *colon;
	struct addrinfo hints, *res = NULL;
	unsigned long port;
	char *end;
	size_t hlen;
	int ret;

	memset(out, 0, sizeof(*out));
	if (!str || strnlen(str, IC_ADDR_MAX) >= IC_ADDR_MAX) {
		pr_err("address missing or too long");
		return -EINVAL;
	}
	if (str[0] == '[') {
		colon = strchr(str, ']');
		if (!colon || colon[1] != ':') {
			pr_err("bad address '%s': expected [v6addr]:port", str);
			return -EINVAL;
		}
		hlen = (size_t)(colon - str - 1);
		memcpy(host, str + 1, hlen);
		port_str = colon + 2;
	} else {
		colon = strrchr(str, ':');
		if (!colon || memchr(str, ':', (size_t)(colon - str))) {
			pr_err("bad address '%s': expected host:port (IPv6 hosts in brackets)", str);
			return -EINVAL;
		}
		hlen = (size_t)(colon - str);
		memcpy(host, str, hlen);
		port_str = colon + 1;
	}
	host[hlen] = '\0';
	errno = 0;
	port = strtoul(port_str, &end, 10);
	if (!hlen || !*port_str || *end || errno || port > 65535 || port_str[0] == '-' || port_str[0] == '+') {
		pr_err("bad address '%s': need a host and a port 0..65535", str);
		return -EINVAL;
	}

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	if (!strcmp(host, "localhost"))
		hints.ai_family = AF_INET;   /* both ends must pick the same loopback */
	ret = getaddrinfo(host, port_str, &hints, &res);
	if (ret || !res) {
		pr_err("cannot resolve '%s': %s", host, ret ? gai_strerror(ret) : "no result");
		return -EINVAL;
	}
	if (res->ai_addrlen > sizeof(out->ss)) {
		freeaddrinfo(res);
		return -EINVAL;
	}
	memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
	out->len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

unsigned int ic_addr_port(const struct ic_sockaddr *a)
{
	if (a->ss.ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
	if (a->ss.ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
	return 0;
}

const char *ic_addr_format(const struct ic_sockaddr *a, char *buf, size_t cap)
{
	char host[INET6_ADDRSTRLEN] = "?";

	if (a->ss.ss_family == AF_INET) {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)&a->ss)->sin_addr, host, sizeof(host));
		snprintf(buf, cap, "%s:%u", host, ic_addr_port(a));
	} else if (a->ss.ss_family == AF_INET6) {
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&a->ss)->sin6_addr, host, sizeof(host));
		snprintf(buf, cap, "[%s]:%u", host, ic_addr_port(a));
	} else {
		snprintf(buf, cap, "(family %d)", a->ss.ss_family);
	}
	return buf;
}
