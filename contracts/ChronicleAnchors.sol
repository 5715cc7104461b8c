// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title Chronicle anchors, posted by the members of one Chronicle committee
/// @notice Each member posts (uptoSeq, digest) from its own account. An anchor counts as the
/// committee's once `quorum` distinct members posted the same digest for the same uptoSeq.
/// A digest that differs from the first one posted for that uptoSeq is kept (every member's
/// post is stored) and emitted as a Conflict event: evidence against whoever posted it.
/// Contract for coalitiond's EVM anchor sink; see docs/chronicle.md §7.
contract ChronicleAnchors {
    /// The members' accounts, in committee member order (index i = member i).
    address[] private memberList;
    /// 1 + the member's index; 0 for an account that is not a member.
    mapping(address => uint256) public memberIndexPlusOne;
    /// Distinct members that must post the same digest (2 * quorum > members: one winner).
    uint256 public immutable quorum;

    /// posted[uptoSeq][member]: the digest that member posted (zero: none).
    mapping(uint64 => mapping(address => bytes32)) public posted;
    /// votes[uptoSeq][digest]: how many distinct members posted that digest.
    mapping(uint64 => mapping(bytes32 => uint256)) public votes;
    /// confirmed[uptoSeq]: the digest `quorum` members agreed on (zero: none yet).
    mapping(uint64 => bytes32) public confirmed;
    /// firstDigest[uptoSeq]: the first digest anyone posted (conflicts are named against it).
    mapping(uint64 => bytes32) public firstDigest;
    /// nextSeq[member]: one past the highest uptoSeq it posted (0: nothing). A member's posts
    /// strictly increase, so it can never post twice for one uptoSeq.
    mapping(address => uint64) public nextSeq;
    /// Anchors confirmed so far.
    uint64 public anchoredCount;

    event Posted(uint64 indexed uptoSeq, address indexed member, bytes32 digest);
    event Anchored(uint64 indexed uptoSeq, bytes32 digest);
    event Conflict(uint64 indexed uptoSeq, address indexed member, bytes32 digest,
                   bytes32 firstDigest);

    error NotMember(address account);
    error ZeroDigest();
    error NotAfterLastPost(uint64 uptoSeq, uint64 nextSeq);
    error BadCommittee(string why);

    constructor(address[] memory members_, uint256 quorum_) {
        uint256 n = members_.length;
        if (n == 0 || n > 64) revert BadCommittee("1..64 members");
        if (quorum_ > n || 2 * quorum_ <= n) revert BadCommittee("need n/2 < quorum <= n");
        for (uint256 i = 0; i < n; i++) {
            address m = members_[i];
            if (m == address(0)) revert BadCommittee("zero address");
            if (memberIndexPlusOne[m] != 0) revert BadCommittee("duplicate member");
            memberIndexPlusOne[m] = i + 1;
        }
        memberList = members_;
        quorum = quorum_;
    }

    function members() external view returns (address[] memory) {
        return memberList;
    }

    /// Post this member's digest of the Chronicle's entries 0..uptoSeq.
    function post(uint64 uptoSeq, bytes32 digest) external {
        if (memberIndexPlusOne[msg.sender] == 0) revert NotMember(msg.sender);
        if (digest == bytes32(0)) revert ZeroDigest();
        uint64 next = nextSeq[msg.sender];
        if (uptoSeq < next) revert NotAfterLastPost(uptoSeq, next);
        nextSeq[msg.sender] = uptoSeq + 1;
        posted[uptoSeq][msg.sender] = digest;
        emit Posted(uptoSeq, msg.sender, digest);
        bytes32 first = firstDigest[uptoSeq];
        if (first == bytes32(0)) {
            firstDigest[uptoSeq] = digest;
        } else if (first != digest) {
            emit Conflict(uptoSeq, msg.sender, digest, first);
        }
        uint256 v = votes[uptoSeq][digest] + 1;
        votes[uptoSeq][digest] = v;
        if (v == quorum) {
            confirmed[uptoSeq] = digest;
            anchoredCount += 1;
            emit Anchored(uptoSeq, digest);
        }
    }
}
