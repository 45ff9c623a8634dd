#!/bin/bash
# Kernel reference: ICMP errors about SNATed flows, captured before and after R's translation.
# Run as root. Output: /tmp/pkn_r1.pcap (errors as they reach R) and /tmp/pkn_r0.pcap
# (after R's nf_nat_icmp_reply_translation). The KNAT_* arrays in src/fixtures.rs
# were cut from these (the ICMP type 3 frames, in order: UDP, TCP, ICMP).
# Not run by `cargo test`; the fixtures are.
set -u
P=pkn$$
A=${P}a; R=${P}r; B=${P}b
cleanup() { ip netns del $A 2>/dev/null; ip netns del $R 2>/dev/null; ip netns del $B 2>/dev/null; }
trap cleanup EXIT
ip netns add $A; ip netns add $R; ip netns add $B
ip link add a0 netns $A type veth peer name r0 netns $R
ip link add r1 netns $R type veth peer name b0 netns $B
for n in $A $R $B; do ip netns exec $n sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1; ip -n $n link set lo up; done
ip -n $A link set a0 address 02:00:00:00:0a:01; ip -n $R link set r0 address 02:00:00:00:0a:02
ip -n $R link set r1 address 02:00:00:00:0b:01; ip -n $B link set b0 address 02:00:00:00:0b:02
ip -n $A addr add 172.18.0.2/16 dev a0; ip -n $R addr add 172.18.0.1/16 dev r0
ip -n $R addr add 10.0.2.15/24 dev r1; ip -n $B addr add 10.0.2.2/24 dev b0
for x in "$A a0" "$R r0" "$R r1" "$B b0"; do set -- $x; ip -n $1 link set $2 up; ip netns exec $1 ethtool -K $2 tx off rx off >/dev/null 2>&1; done
ip -n $A route add default via 172.18.0.1
ip netns exec $R sysctl -qw net.ipv4.ip_forward=1
ip netns exec $R iptables -t nat -A POSTROUTING -s 172.18.0.0/16 -o r1 -p udp -j MASQUERADE --to-ports 55666
ip netns exec $R iptables -t nat -A POSTROUTING -s 172.18.0.0/16 -o r1 -p tcp -j MASQUERADE --to-ports 55670
ip netns exec $R iptables -t nat -A POSTROUTING -s 172.18.0.0/16 -o r1 -j MASQUERADE
ip netns exec $B iptables -A INPUT -p tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable
ip netns exec $B iptables -A INPUT -p icmp --icmp-type echo-request -j REJECT --reject-with icmp-host-prohibited
ip netns exec $R tcpdump -i r1 -U -w /tmp/pkn_r1.pcap 'icmp' 2>/dev/null & T1=$!
ip netns exec $R tcpdump -i r0 -U -w /tmp/pkn_r0.pcap 'icmp' 2>/dev/null & T2=$!
sleep 1.5
ip netns exec $A python3 - <<'PY'
import socket, time, struct
u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); u.bind(("172.18.0.2",33894)); u.sendto(b"dnsq",("10.0.2.2",53)); time.sleep(0.3)
t=socket.socket(); t.settimeout(1)
try: t.connect(("10.0.2.2",80))
except Exception as e: pass
time.sleep(0.3)
r=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_ICMP)
def cs(b):
    s=sum(struct.unpack('!%dH'%(len(b)//2),b))
    while s>>16: s=(s&0xffff)+(s>>16)
    return ~s&0xffff
m=struct.pack('!BBHHH',8,0,0,0x4321,1)+b'abcdefgh'
m=m[:2]+struct.pack('!H',cs(m))+m[4:]
r.sendto(m,("10.0.2.2",0)); time.sleep(0.5)
PY
sleep 1; kill $T1 $T2; wait $T1 $T2 2>/dev/null
ip netns exec $R conntrack -L 2>/dev/null
