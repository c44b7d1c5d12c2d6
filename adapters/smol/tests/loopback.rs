//! The server in this process, over real loopback TCP: the scenarios both adapters share
//! (`parlor_os::testkit::loopback`).

parlor_os::loopback_tests!(parlor_smol::Bound);
