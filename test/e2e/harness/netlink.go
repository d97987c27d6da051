package harness

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// The few rtnetlink requests the harness's CNI bridges need (create a bridge with an
// address, delete a link), so the suite needs no iproute2.

// createBridge creates the Linux bridge name, up, with address addr (its gateway
// address and subnet, e.g. 10.88.7.1/24); it fails if name exists.
func createBridge(name string, addr *net.IPNet) error {
	info := ifInfomsg(0, unix.IFF_UP)
	kind := rtattr(unix.IFLA_INFO_KIND, []byte("bridge"))
	err := netlinkDo(unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL,
		info, rtattr(unix.IFLA_IFNAME, cString(name)), rtattr(unix.IFLA_LINKINFO, kind))
	if err != nil {
		return fmt.Errorf("create bridge %s: %w", name, err)
	}
	if err := addAddress(name, addr); err != nil {
		_ = deleteLink(name)
		return err
	}
	return nil
}

// addAddress adds the IPv4 address addr to the interface name.
func addAddress(name string, addr *net.IPNet) error {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return err
	}
	ip4 := addr.IP.To4()
	ones, _ := addr.Mask.Size()
	msg := make([]byte, unix.SizeofIfAddrmsg)
	msg[0], msg[1] = unix.AF_INET, byte(ones)
	binary.NativeEndian.PutUint32(msg[4:], uint32(ifc.Index))
	err = netlinkDo(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_EXCL,
		msg, rtattr(unix.IFA_LOCAL, ip4), rtattr(unix.IFA_ADDRESS, ip4))
	if err != nil {
		return fmt.Errorf("add address %s to %s: %w", addr, name, err)
	}
	return nil
}

// deleteLink deletes the network interface name; it is not an error when there is none.
func deleteLink(name string) error {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return nil // gone
	}
	if err := netlinkDo(unix.RTM_DELLINK, 0, ifInfomsg(int32(ifc.Index), 0)); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete link %s: %w", name, err)
	}
	return nil
}

func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

// bridgePorts lists the interfaces attached to bridge name (the host ends of pods' veth
// pairs).
func bridgePorts(name string) []string {
	entries, _ := os.ReadDir(filepath.Join("/sys/class/net", name, "brif"))
	ports := make([]string, 0, len(entries))
	for _, e := range entries {
		ports = append(ports, e.Name())
	}
	return ports
}

// netlinkDo sends one rtnetlink request made of parts and waits for its
// acknowledgement.
func netlinkDo(typ, flags uint16, parts ...[]byte) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	msg := make([]byte, unix.SizeofNlMsghdr)
	for _, p := range parts {
		msg = append(msg, p...)
	}
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], typ)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK|flags)
	binary.NativeEndian.PutUint32(msg[8:], 1) // sequence number
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			if len(m.Data) < 4 {
				return errors.New("short netlink error message")
			}
			if errno := -int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
				return unix.Errno(errno)
			}
			return nil
		}
	}
}

// ifInfomsg is a struct ifinfomsg for the link index, setting flags (of IFF_UP).
func ifInfomsg(index int32, flags uint32) []byte {
	b := make([]byte, unix.SizeofIfInfomsg)
	b[0] = unix.AF_UNSPEC
	binary.NativeEndian.PutUint32(b[4:], uint32(index))
	binary.NativeEndian.PutUint32(b[8:], flags)
	binary.NativeEndian.PutUint32(b[12:], flags) // ifi_change: the flags given
	return b
}

// rtattr is a struct rtattr of type typ holding data, padded to 4 bytes.
func rtattr(typ uint16, data []byte) []byte {
	l := unix.SizeofRtAttr + len(data)
	b := make([]byte, (l+3)&^3)
	binary.NativeEndian.PutUint16(b[0:], uint16(l))
	binary.NativeEndian.PutUint16(b[2:], typ)
	copy(b[unix.SizeofRtAttr:], data)
	return b
}

func cString(s string) []byte { return append([]byte(s), 0) }
