# interconnect: transports (tcp, rdma, loop, fabric), framing, connection authentication.
LIBS_ALL += ic
ic_SRCS :=
