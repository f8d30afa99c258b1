//! Raw packet headers (Ethernet, 802.1Q, MPLS, IPv4, IPv6, TCP, UDP, ICMP), as sFlow and IPFIX carry them.
