//! The IIPtran data planes: one model of SAs, policies and selectors, one `Dataplane`
//! interface, and its backends (Linux XFRM netlink, userspace ESP over UDP).
